//! The fleet's state, folded from its facts: releases by order, and per environment its
//! tickets (queued, running, finished), its lock and its live release. The same checks decide
//! a new fact (the live path refuses it with a typed error) and accept a fact read back from
//! the journal (the replay refuses a history the fleet could not have written), so a ledger
//! is always re-derived, never trusted as stored.

use std::collections::HashMap;

use super::fact::{Actor, AutoEntry, DeployKind, FleetFact};
use super::phases::{Lifecycle, PhaseEntry};
use super::{FleetError, FleetOptions, QueueMode};
use crate::artifact::ArtifactRef;
use crate::environment::EnvironmentName;
use crate::id::ReleaseId;
use crate::journal::Seq;
use crate::lifecycle::Verdict;
use crate::record::GateRecord;
use crate::time::Timestamp;

/// Where a deployment stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum TicketStatus {
    /// Waiting in the environment's queue.
    Queued,
    /// Holding the environment's lock, running its deploy stages.
    Running {
        /// Since when.
        since: Timestamp,
        /// When its lease ends.
        until: Timestamp,
    },
    /// Its deploy stages succeeded: the release went live.
    Deployed {
        /// When.
        at: Timestamp,
    },
    /// Its deploy stages failed; what was live stays live.
    Failed {
        /// The first failed stage and why.
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// Dropped from the queue: a newer release is (or is about to be) live.
    Superseded {
        /// The newer release.
        by: ReleaseId,
        /// When.
        at: Timestamp,
    },
    /// Its lock's lease ran out and another deployment took the environment over (the
    /// process running it stopped).
    Interrupted {
        /// When it was taken over.
        at: Timestamp,
    },
}

/// A release the fleet knows.
#[derive(Debug, Clone)]
pub(super) struct Parked {
    pub id: ReleaseId,
    /// Its place in the order of releases: the journal position of its start (newer is
    /// larger).
    pub ordinal: u64,
    pub revision: String,
    pub artifact: ArtifactRef,
    pub registered_at: Timestamp,
    /// The journal position of its move to Approved, once known (0: proved by a typed
    /// release in this process).
    pub approved_at: Option<Seq>,
    /// The environments (by index) where it went live at least once.
    pub live_in: Vec<u32>,
}

/// One deployment asked for in an environment.
#[derive(Debug, Clone)]
pub(super) struct Ticket {
    pub seq: Seq,
    pub release: u32,
    pub kind: DeployKind,
    pub by: Actor,
    pub queued_at: Timestamp,
    pub status: TicketStatus,
}

/// One environment.
#[derive(Debug, Clone)]
pub(super) struct EnvState {
    pub name: EnvironmentName,
    pub phase: usize,
    pub wave: usize,
    /// The last journal entry of the environment's key this state has folded.
    pub head: Seq,
    /// Every ticket, in journal order.
    pub tickets: Vec<Ticket>,
    /// Indices into `tickets` of those queued.
    pub pending: Vec<usize>,
    /// The ticket holding the lock (index into `tickets`) and its lease.
    pub lock: Option<(usize, Timestamp)>,
    /// The ticket whose release is live.
    pub live: Option<usize>,
    /// That ticket's release (its index in `State::releases`), kept here so that asking
    /// what is live reads no ticket: a reconcile pass over an environment in sync touches
    /// this struct and nothing else of the environment's.
    live_release: u32,
    /// Refusals recorded.
    pub refusals: usize,
    /// The names of the pipeline's gates on a deployment here, in the order they are asked.
    pub gate_names: Vec<String>,
    /// Releases whose last request here waits on pending gates, with the verdicts.
    pub parked: Vec<(u32, Vec<GateRecord>)>,
}

impl EnvState {
    fn ticket(&self, seq: Seq) -> Option<usize> {
        self.tickets.binary_search_by_key(&seq, |t| t.seq).ok()
    }

    /// The release live here (its index in `State::releases`).
    pub fn live_release(&self) -> Option<u32> {
        self.live.map(|_| self.live_release)
    }
}

/// What the queue does next: tickets to drop as superseded, then the one to run.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Pick {
    pub superseded: Vec<(Seq, u32)>,
    pub next: Option<Seq>,
}

/// The whole fleet.
#[derive(Debug)]
pub(super) struct State {
    pub lifecycle: Lifecycle,
    pub options: FleetOptions,
    pub releases: Vec<Parked>,
    pub by_id: HashMap<ReleaseId, u32>,
    pub registry_head: Seq,
    pub envs: Vec<EnvState>,
    pub env_index: HashMap<EnvironmentName, usize>,
    /// Whether the journal holds the fleet's settings (a [`FleetFact::Settings`]).
    pub settings_recorded: bool,
}

impl State {
    pub fn new(lifecycle: Lifecycle, options: FleetOptions) -> Self {
        let mut envs = Vec::new();
        let mut env_index = HashMap::new();
        for (p, phase) in lifecycle.phases().iter().enumerate() {
            for (w, wave) in phase.waves().iter().enumerate() {
                for name in wave {
                    env_index.insert(name.clone(), envs.len());
                    envs.push(EnvState {
                        name: name.clone(),
                        phase: p,
                        wave: w,
                        head: 0,
                        tickets: Vec::new(),
                        pending: Vec::new(),
                        lock: None,
                        live: None,
                        live_release: 0,
                        refusals: 0,
                        gate_names: Vec::new(),
                        parked: Vec::new(),
                    });
                }
            }
        }
        State {
            lifecycle,
            options,
            releases: Vec::new(),
            by_id: HashMap::new(),
            registry_head: 0,
            envs,
            env_index,
            settings_recorded: false,
        }
    }

    pub fn env(&self, name: &str) -> Result<usize, FleetError> {
        self.env_index
            .get(name)
            .copied()
            .ok_or_else(|| FleetError::UnknownEnvironment {
                environment: name.to_owned(),
            })
    }

    pub fn release(&self, id: &str) -> Result<u32, FleetError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| FleetError::UnknownRelease {
                release: id.to_owned(),
            })
    }

    /// Whether release `a` is newer than release `b` (started later).
    pub fn newer(&self, a: u32, b: u32) -> bool {
        self.releases[a as usize].ordinal > self.releases[b as usize].ordinal
    }

    pub fn is_production(&self, env: usize) -> bool {
        self.envs[env].phase + 1 == self.lifecycle.phases().len()
    }

    /// Checks a fact against the state, as the fleet would have decided it; `seq` is where
    /// it is (or would be) in the journal.
    pub fn check(&self, fact: &FleetFact, seq: Seq) -> Result<(), FleetError> {
        match fact {
            FleetFact::Registered { release, .. } => {
                if self.by_id.contains_key(release) {
                    return Err(FleetError::DuplicateRelease {
                        release: release.clone(),
                    });
                }
                Ok(())
            }
            FleetFact::Queued {
                environment,
                release,
                kind,
                by,
                gates,
                automatic,
                ..
            } => self.check_queued(
                environment,
                release,
                kind,
                by,
                gates,
                automatic.as_ref(),
                seq,
            ),
            FleetFact::Parked {
                environment,
                release,
                kind,
                gates,
                ..
            } => self.check_parked(environment, release, kind, gates),
            FleetFact::Settings {
                lifecycle,
                options,
                digest,
                ..
            } => self.check_settings(lifecycle, options, digest),
            FleetFact::Superseded {
                environment,
                ticket,
                by,
                ..
            } => {
                let env = self.env(environment.as_str())?;
                let by = self.release(by.as_str())?;
                if self.pick(env).superseded.contains(&(*ticket, by)) {
                    Ok(())
                } else {
                    Err(FleetError::Mismatch(format!(
                        "ticket {ticket} in `{environment}` is not superseded by `{}`",
                        self.releases[by as usize].id
                    )))
                }
            }
            FleetFact::Locked {
                environment,
                ticket,
                at,
                until,
            } => self.check_lock(environment, *ticket, *at, *until),
            FleetFact::Finished {
                environment,
                ticket,
                ..
            } => {
                let env = self.env(environment.as_str())?;
                let state = &self.envs[env];
                match state.lock {
                    Some((holder, _)) if state.tickets[holder].seq == *ticket => Ok(()),
                    _ => Err(FleetError::Mismatch(format!(
                        "ticket {ticket} finished in `{environment}` without holding its lock"
                    ))),
                }
            }
            FleetFact::Refused { environment, .. } => self.env(environment.as_str()).map(|_| ()),
        }
    }

    /// Whether `release` may be queued for a `kind` deployment into `env` by `by`.
    pub fn check_request(
        &self,
        env: usize,
        release: u32,
        kind: &DeployKind,
        by: &Actor,
        seq: Seq,
    ) -> Result<(), FleetError> {
        let state = &self.envs[env];
        let parked = &self.releases[release as usize];
        let live = state.live_release();
        let live_id = |r: u32| self.releases[r as usize].id.clone();
        match kind {
            DeployKind::Promote => {
                if live == Some(release) {
                    return Err(FleetError::AlreadyLive {
                        release: parked.id.clone(),
                        environment: state.name.clone(),
                    });
                }
                if let Some(live) = live.filter(|&l| self.newer(l, release)) {
                    return Err(FleetError::OlderOverNewer {
                        release: parked.id.clone(),
                        live: live_id(live),
                        environment: state.name.clone(),
                    });
                }
                let phase = &self.lifecycle.phases()[state.phase];
                if let PhaseEntry::People(people) = phase.entry() {
                    if !matches!(by, Actor::Person(p) if people.contains(p)) {
                        return Err(FleetError::NotAllowed {
                            actor: by.clone(),
                            action: format!("promote into phase `{}`", phase.name()),
                        });
                    }
                }
                for earlier in &self.lifecycle.phases()[..state.phase] {
                    let count = self.count_live_in(parked, earlier.environments());
                    if !earlier.passed_with(count) {
                        return Err(FleetError::PhaseNotPassed {
                            release: parked.id.clone(),
                            phase: earlier.name().to_owned(),
                        });
                    }
                }
                for wave in &phase.waves()[..state.wave] {
                    for name in wave {
                        if self.count_live_in(parked, std::iter::once(name)) == 0 {
                            return Err(FleetError::WaveNotDone {
                                release: parked.id.clone(),
                                environment: name.clone(),
                            });
                        }
                    }
                }
                if self.is_production(env) && parked.approved_at.is_none_or(|a| a >= seq) {
                    return Err(FleetError::NotApproved {
                        release: parked.id.clone(),
                        environment: state.name.clone(),
                    });
                }
            }
            DeployKind::Redeploy => {
                if live != Some(release) {
                    return Err(FleetError::NotLive {
                        release: parked.id.clone(),
                        environment: state.name.clone(),
                    });
                }
            }
            DeployKind::Rollback { from, .. } => {
                let from_ordinal = self.release(from.as_str())?;
                if live != Some(from_ordinal) {
                    return Err(FleetError::NotLive {
                        release: from.clone(),
                        environment: state.name.clone(),
                    });
                }
                if release == from_ordinal || !parked.live_in.contains(&(env as u32)) {
                    return Err(FleetError::NeverLive {
                        release: parked.id.clone(),
                        environment: state.name.clone(),
                    });
                }
                let rollback = &self.options.rollback;
                let allowed = match by {
                    Actor::Person(p) => rollback.people.contains(p),
                    Actor::Automation(_) => rollback.automated,
                };
                if !allowed {
                    return Err(FleetError::NotAllowed {
                        actor: by.clone(),
                        action: format!("roll back `{}`", state.name),
                    });
                }
            }
        }
        if state.pending.len() >= self.options.queue_limit {
            return Err(FleetError::QueueFull {
                environment: state.name.clone(),
                limit: self.options.queue_limit,
            });
        }
        Ok(())
    }

    /// Whether a deployment may be queued: the request's rules, an automatic promotion's
    /// own, and the verdicts of the environment's gates (every one open; none for a
    /// rollback, which asks no gate).
    #[allow(clippy::too_many_arguments)]
    fn check_queued(
        &self,
        environment: &EnvironmentName,
        release: &ReleaseId,
        kind: &DeployKind,
        by: &Actor,
        gates: &[GateRecord],
        automatic: Option<&AutoEntry>,
        seq: Seq,
    ) -> Result<(), FleetError> {
        let env = self.env(environment.as_str())?;
        let release = self.release(release.as_str())?;
        self.check_request(env, release, kind, by, seq)?;
        if let Some(auto) = automatic {
            self.check_automatic(env, kind, by, auto)?;
        }
        if matches!(kind, DeployKind::Rollback { .. }) {
            if gates.is_empty() {
                return Ok(());
            }
            return Err(FleetError::Mismatch(format!(
                "a rollback in `{environment}` records gate verdicts, but a rollback asks no gate"
            )));
        }
        self.check_gates(env, gates)?;
        match gates.iter().find(|g| !g.verdict.is_open()) {
            None => Ok(()),
            Some(g) => Err(FleetError::Mismatch(format!(
                "a deployment into `{environment}` was queued with gate `{}` {}",
                g.gate, g.verdict
            ))),
        }
    }

    /// Whether `ticket` may take `environment`'s lock at `at` until `until`: the lock is free
    /// (or its lease over), and the queue runs this ticket next.
    fn check_lock(
        &self,
        environment: &EnvironmentName,
        ticket: Seq,
        at: Timestamp,
        until: Timestamp,
    ) -> Result<(), FleetError> {
        let env = self.env(environment.as_str())?;
        let state = &self.envs[env];
        if let Some((holder, lease)) = state.lock {
            if at < lease {
                return Err(FleetError::Locked {
                    environment: environment.clone(),
                    ticket: state.tickets[holder].seq,
                    until: lease,
                });
            }
        }
        if until < at {
            return Err(FleetError::Mismatch(format!(
                "lock of ticket {ticket} ends before it starts"
            )));
        }
        let pick = self.pick(env);
        if pick.superseded.is_empty() && pick.next == Some(ticket) {
            Ok(())
        } else {
            Err(FleetError::Mismatch(format!(
                "ticket {ticket} in `{environment}` is not the one its queue runs next ({:?})",
                pick.next
            )))
        }
    }

    /// Whether a parked request is one the fleet would have parked: the pipeline's gates on
    /// the environment, none closed, at least one pending, and not a rollback.
    fn check_parked(
        &self,
        environment: &EnvironmentName,
        release: &ReleaseId,
        kind: &DeployKind,
        gates: &[GateRecord],
    ) -> Result<(), FleetError> {
        let env = self.env(environment.as_str())?;
        self.release(release.as_str())?;
        self.check_gates(env, gates)?;
        let pending = gates
            .iter()
            .any(|g| matches!(g.verdict, Verdict::Pending { .. }));
        let closed = gates
            .iter()
            .any(|g| matches!(g.verdict, Verdict::Closed { .. }));
        if matches!(kind, DeployKind::Rollback { .. }) || !pending || closed {
            return Err(FleetError::Mismatch(format!(
                "a {kind} into `{environment}` parked without a pending gate (or with a closed one)"
            )));
        }
        Ok(())
    }

    /// Whether the settings a journal records are this fleet's: recorded once, their digest
    /// theirs, and equal to this fleet's own (else each difference is named).
    fn check_settings(
        &self,
        lifecycle: &Lifecycle,
        options: &FleetOptions,
        digest: &str,
    ) -> Result<(), FleetError> {
        if self.settings_recorded {
            return Err(FleetError::Mismatch(
                "the fleet's settings are recorded twice".to_owned(),
            ));
        }
        if digest != settings_digest(lifecycle, options) {
            return Err(FleetError::Mismatch(
                "the settings' digest is not the digest of the settings".to_owned(),
            ));
        }
        let differences = settings_differences(lifecycle, options, &self.lifecycle, &self.options);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(FleetError::SettingsDiffer { differences })
        }
    }

    /// Whether a deployment's recorded gate verdicts name the pipeline's gates on `env`, in
    /// order.
    fn check_gates(&self, env: usize, gates: &[GateRecord]) -> Result<(), FleetError> {
        let state = &self.envs[env];
        let names: Vec<&str> = gates.iter().map(|g| g.gate.as_str()).collect();
        if names == state.gate_names {
            Ok(())
        } else {
            Err(FleetError::Mismatch(format!(
                "a deployment into `{}` records the verdicts of gates {names:?}, but its gates are {:?}",
                state.name, state.gate_names
            )))
        }
    }

    /// Whether an automatic promotion into `env` is one the fleet would make: a promotion
    /// by an automated trigger into a phase entered automatically, recorded with that phase
    /// and the one before it.
    fn check_automatic(
        &self,
        env: usize,
        kind: &DeployKind,
        by: &Actor,
        auto: &AutoEntry,
    ) -> Result<(), FleetError> {
        let p = self.envs[env].phase;
        let phases = self.lifecycle.phases();
        let after = p.checked_sub(1).map(|e| phases[e].name().to_owned());
        if *kind == DeployKind::Promote
            && matches!(by, Actor::Automation(_))
            && *phases[p].entry() == PhaseEntry::Automatic
            && auto.phase == phases[p].name()
            && auto.after == after
        {
            Ok(())
        } else {
            Err(FleetError::Mismatch(format!(
                "an automatic promotion into `{}` that the fleet would not make",
                self.envs[env].name
            )))
        }
    }

    /// Whether the release is due in `env` on its own: the phase is entered automatically,
    /// the release is not there, every earlier phase's rule and earlier wave is met, it is
    /// newer than what is live, and nothing of it waits or runs there.
    pub fn due(&self, env: usize, release: u32) -> bool {
        let state = &self.envs[env];
        let parked = &self.releases[release as usize];
        let phase = &self.lifecycle.phases()[state.phase];
        if *phase.entry() != PhaseEntry::Automatic
            || parked.live_in.contains(&(env as u32))
            || state
                .live_release()
                .is_some_and(|l| l == release || self.newer(l, release))
            || state
                .pending
                .iter()
                .chain(state.lock.as_ref().map(|(i, _)| i))
                .any(|&i| state.tickets[i].release == release)
        {
            return false;
        }
        self.check_request(
            env,
            release,
            &DeployKind::Promote,
            &Actor::Automation(String::new()),
            Seq::MAX,
        )
        .is_ok()
    }

    fn count_live_in<'a>(
        &self,
        parked: &Parked,
        names: impl Iterator<Item = &'a EnvironmentName>,
    ) -> usize {
        names
            .filter(|name| {
                self.env_index
                    .get(*name)
                    .is_some_and(|&e| parked.live_in.contains(&(e as u32)))
            })
            .count()
    }

    /// What the queue of `env` does next under the fleet's queue mode: pending deployments
    /// that would put an older release over the live one (or, newest ready first, over the
    /// newest one waiting) are superseded; then the next one runs.
    pub fn pick(&self, env: usize) -> Pick {
        let state = &self.envs[env];
        let live = state.live_release();
        let mut pick = Pick::default();
        let mut remaining: Vec<&Ticket> = Vec::new();
        for &i in &state.pending {
            let ticket = &state.tickets[i];
            let superseded_by = match ticket.kind {
                DeployKind::Promote => live.filter(|&l| self.newer(l, ticket.release)),
                DeployKind::Redeploy => live.filter(|&l| l != ticket.release),
                DeployKind::Rollback { .. } => None,
            };
            match superseded_by {
                Some(by) => pick.superseded.push((ticket.seq, by)),
                None => remaining.push(ticket),
            }
        }
        if !pick.superseded.is_empty() {
            return pick;
        }
        pick.next = match self.options.queue_mode {
            QueueMode::OldestFirst => remaining.first().map(|t| t.seq),
            QueueMode::NewestFirst => remaining.last().map(|t| t.seq),
            QueueMode::NewestReadyFirst => {
                let urgent = remaining
                    .iter()
                    .find(|t| !matches!(t.kind, DeployKind::Promote));
                if let Some(t) = urgent {
                    Some(t.seq)
                } else {
                    let newest = remaining
                        .iter()
                        .max_by_key(|t| (self.releases[t.release as usize].ordinal, t.seq));
                    if let Some(newest) = newest {
                        for t in &remaining {
                            if self.newer(newest.release, t.release) {
                                pick.superseded.push((t.seq, newest.release));
                            }
                        }
                    }
                    // The superseded go first (their facts), then the newest runs.
                    newest.filter(|_| pick.superseded.is_empty()).map(|t| t.seq)
                }
            }
        };
        pick
    }

    /// The locked deployment `ticket` of `env` ended with `report` at `at`.
    fn finish(
        &mut self,
        env: usize,
        ticket: Seq,
        report: &crate::engine::StepReport,
        at: Timestamp,
    ) {
        let state = &mut self.envs[env];
        let Some(i) = state.ticket(ticket) else {
            return;
        };
        state.lock = None;
        if report.succeeded() {
            state.tickets[i].status = TicketStatus::Deployed { at };
            state.live = Some(i);
            state.live_release = state.tickets[i].release;
            let release = state.tickets[i].release as usize;
            let live_in = &mut self.releases[release].live_in;
            if !live_in.contains(&(env as u32)) {
                live_in.push(env as u32);
            }
        } else {
            let reason = report.failed().next().map_or_else(
                || "the deploy step was cancelled".to_owned(),
                |stage| format!("stage `{}` {}", stage.id, stage.status),
            );
            state.tickets[i].status = TicketStatus::Failed { reason, at };
        }
    }

    /// `ticket` takes `environment`'s lock at `at` until `until` (a holder whose lease ran
    /// out is interrupted).
    fn take_lock(
        &mut self,
        environment: &EnvironmentName,
        ticket: Seq,
        at: Timestamp,
        until: Timestamp,
    ) {
        if let Some(state) = self.env_index.get(environment).map(|&e| &mut self.envs[e]) {
            if let Some((holder, _)) = state.lock.take() {
                state.tickets[holder].status = TicketStatus::Interrupted { at };
            }
            if let Some(i) = state.ticket(ticket) {
                state.pending.retain(|&p| p != i);
                state.tickets[i].status = TicketStatus::Running { since: at, until };
                state.lock = Some((i, until));
            }
        }
    }

    /// `release`'s last request into `environment` waits on `gates`.
    fn park(&mut self, environment: &EnvironmentName, release: &ReleaseId, gates: &[GateRecord]) {
        if let (Some(&env), Some(&release)) =
            (self.env_index.get(environment), self.by_id.get(release))
        {
            let parked = &mut self.envs[env].parked;
            parked.retain(|(r, _)| *r != release);
            parked.push((release, gates.to_vec()));
        }
    }

    /// Applies a fact that [`check`](Self::check) accepted, at journal position `seq`.
    pub fn apply(&mut self, fact: &FleetFact, seq: Seq) {
        match fact {
            FleetFact::Registered {
                release,
                ordinal,
                revision,
                artifact,
                at,
            } => {
                self.by_id
                    .insert(release.clone(), self.releases.len() as u32);
                self.releases.push(Parked {
                    id: release.clone(),
                    ordinal: *ordinal,
                    revision: revision.clone(),
                    artifact: artifact.clone(),
                    registered_at: *at,
                    approved_at: None,
                    live_in: Vec::new(),
                });
                self.registry_head = seq;
                return;
            }
            FleetFact::Queued {
                environment,
                release,
                kind,
                by,
                at,
                ..
            } => {
                let (Some(&env), Some(&release)) =
                    (self.env_index.get(environment), self.by_id.get(release))
                else {
                    return;
                };
                let state = &mut self.envs[env];
                state.parked.retain(|(r, _)| *r != release);
                state.pending.push(state.tickets.len());
                state.tickets.push(Ticket {
                    seq,
                    release,
                    kind: kind.clone(),
                    by: by.clone(),
                    queued_at: *at,
                    status: TicketStatus::Queued,
                });
            }
            FleetFact::Superseded {
                environment,
                ticket,
                by,
                at,
            } => {
                if let Some(state) = self.env_index.get(environment).map(|&e| &mut self.envs[e]) {
                    if let Some(i) = state.ticket(*ticket) {
                        state.pending.retain(|&p| p != i);
                        state.tickets[i].status = TicketStatus::Superseded {
                            by: by.clone(),
                            at: *at,
                        };
                    }
                }
            }
            FleetFact::Locked {
                environment,
                ticket,
                at,
                until,
            } => self.take_lock(environment, *ticket, *at, *until),
            FleetFact::Finished {
                environment,
                ticket,
                report,
                at,
            } => {
                if let Some(&env) = self.env_index.get(environment) {
                    self.finish(env, *ticket, report, *at);
                }
            }
            FleetFact::Refused { environment, .. } => {
                if let Some(&env) = self.env_index.get(environment) {
                    self.envs[env].refusals += 1;
                }
            }
            FleetFact::Parked {
                environment,
                release,
                gates,
                ..
            } => self.park(environment, release, gates),
            FleetFact::Settings { .. } => {
                self.settings_recorded = true;
                self.registry_head = seq;
                return;
            }
        }
        if let Some(&env) = fact.environment().and_then(|e| self.env_index.get(e)) {
            self.envs[env].head = seq;
        }
    }
}

/// The digest of a fleet's settings: SHA-256 of the lifecycle and the options as JSON.
pub(super) fn settings_digest(lifecycle: &Lifecycle, options: &FleetOptions) -> String {
    let json = serde_json::to_vec(&(lifecycle, options)).unwrap_or_default();
    crate::artifact::Digest::sha256(&json).hex().to_owned()
}

/// What differs between the settings the journal holds (`theirs`) and a fleet's own (`ours`),
/// one line per difference, each naming the setting.
pub(super) fn settings_differences(
    theirs_lifecycle: &Lifecycle,
    theirs: &FleetOptions,
    ours_lifecycle: &Lifecycle,
    ours: &FleetOptions,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |what: String, a: String, b: String| {
        if a != b {
            out.push(format!("{what}: {a} in the journal, {b} here"));
        }
    };
    differ(
        "options.queue_mode".into(),
        format!("{:?}", theirs.queue_mode),
        format!("{:?}", ours.queue_mode),
    );
    differ(
        "options.queue_limit".into(),
        theirs.queue_limit.to_string(),
        ours.queue_limit.to_string(),
    );
    differ(
        "options.lock_lease".into(),
        format!("{:?}", theirs.lock_lease),
        format!("{:?}", ours.lock_lease),
    );
    differ(
        "options.rollback".into(),
        format!("{:?}", theirs.rollback),
        format!("{:?}", ours.rollback),
    );
    let (a, b) = (theirs_lifecycle.phases(), ours_lifecycle.phases());
    let names = |p: &[super::phases::Phase]| -> Vec<String> {
        p.iter().map(|p| p.name().to_owned()).collect()
    };
    if names(a) == names(b) {
        for (x, y) in a.iter().zip(b) {
            differ(
                format!("lifecycle phase `{}` waves", x.name()),
                format!("{:?}", x.waves()),
                format!("{:?}", y.waves()),
            );
            differ(
                format!("lifecycle phase `{}` rule", x.name()),
                format!("{:?}", x.progress_rule()),
                format!("{:?}", y.progress_rule()),
            );
            differ(
                format!("lifecycle phase `{}` entry", x.name()),
                format!("{:?}", x.entry()),
                format!("{:?}", y.entry()),
            );
        }
    } else {
        differ(
            "lifecycle phases".into(),
            format!("{:?}", names(a)),
            format!("{:?}", names(b)),
        );
    }
    out
}
