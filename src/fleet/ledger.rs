//! [`Ledger`]: what is where (per environment the live release and digest, since when, by
//! whom, its lock, queue and history), which releases wait on what, the releases ×
//! environments dashboard as text ([`Display`](std::fmt::Display)) and serde (for a UI).

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::fact::{Actor, DeployKind};
use super::phases::PhaseEntry;
use super::state::{State, Ticket, TicketStatus};
use crate::artifact::Digest;
use crate::environment::EnvironmentName;
use crate::id::{Person, PipelineName, ReleaseId};
use crate::journal::Seq;
use crate::time::Timestamp;

/// One deployment: asked for, queued, running or settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its ticket: the journal position of the fact that queued it.
    pub ticket: Seq,
    /// The environment.
    pub environment: EnvironmentName,
    /// The release.
    pub release: ReleaseId,
    /// The digest deployed (the one the release was tested with).
    pub digest: Digest,
    /// A promotion, a redeploy or a rollback.
    pub kind: DeployKind,
    /// Who asked.
    pub by: Actor,
    /// When it was asked for.
    pub queued_at: Timestamp,
    /// Where it stands.
    pub status: TicketStatus,
}

impl Deployment {
    pub(super) fn of(state: &State, env: usize, ticket: &Ticket) -> Self {
        let parked = &state.releases[ticket.release as usize];
        Deployment {
            ticket: ticket.seq,
            environment: state.envs[env].name.clone(),
            release: parked.id.clone(),
            digest: parked.artifact.digest.clone(),
            kind: ticket.kind.clone(),
            by: ticket.by.clone(),
            queued_at: ticket.queued_at,
            status: ticket.status.clone(),
        }
    }

    /// Whether it is a rollback (rather than a promotion or a redeploy of the same release).
    #[must_use]
    pub fn is_rollback(&self) -> bool {
        matches!(self.kind, DeployKind::Rollback { .. })
    }
}

/// One environment in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentView {
    /// The environment.
    pub environment: EnvironmentName,
    /// Its phase.
    pub phase: String,
    /// The deployment that made the live release live (since when, by whom, how).
    pub live: Option<Deployment>,
    /// The deployment holding the lock.
    pub running: Option<Deployment>,
    /// The deployments waiting, in journal order.
    pub queue: Vec<Deployment>,
    /// Every deployment, in journal order.
    pub history: Vec<Deployment>,
}

/// What a release waits on before it can go further.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "on")]
pub enum Waiting {
    /// A deployment of it waits for the environment's lock.
    Lock {
        /// The environment.
        environment: EnvironmentName,
        /// The ticket holding it, if any.
        held_by: Option<Seq>,
    },
    /// The next phase needs one of these people to promote it.
    Person {
        /// The phase.
        phase: String,
        /// Who may.
        people: Vec<Person>,
    },
    /// The production phase needs it approved first.
    Approval {
        /// The phase.
        phase: String,
    },
    /// A deployment of it was asked for and a gate of the pipeline has not decided yet
    /// (a soak timer, a metric gathering): ask again once it has ([`until`](Self::Gate::until)).
    Gate {
        /// The environment.
        environment: EnvironmentName,
        /// The gate.
        gate: String,
        /// What it waits for.
        waiting_for: String,
        /// When it will decide on its own, if it knows.
        until: Option<Timestamp>,
    },
}

/// One release in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseView {
    /// The release.
    pub release: ReleaseId,
    /// Its digest.
    pub digest: Digest,
    /// When it joined the fleet.
    pub registered_at: Timestamp,
    /// Where it is live now.
    pub live_in: Vec<EnvironmentName>,
    /// The next phase it may enter (none once it has entered production's).
    pub next_phase: Option<String>,
    /// What it waits on.
    pub waiting: Vec<Waiting>,
}

/// What is where, as the journal's facts say: environments in lifecycle order, releases
/// newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The pipeline.
    pub pipeline: PipelineName,
    /// Every environment.
    pub environments: Vec<EnvironmentView>,
    /// Every release, newest first.
    pub releases: Vec<ReleaseView>,
}

impl Ledger {
    pub(super) fn of(pipeline: &PipelineName, state: &State) -> Self {
        let environments = state
            .envs
            .iter()
            .enumerate()
            .map(|(e, env)| EnvironmentView {
                environment: env.name.clone(),
                phase: state.lifecycle.phases()[env.phase].name().to_owned(),
                live: env.live.map(|i| Deployment::of(state, e, &env.tickets[i])),
                running: env
                    .lock
                    .map(|(i, _)| Deployment::of(state, e, &env.tickets[i])),
                queue: env
                    .pending
                    .iter()
                    .map(|&i| Deployment::of(state, e, &env.tickets[i]))
                    .collect(),
                history: env
                    .tickets
                    .iter()
                    .map(|t| Deployment::of(state, e, t))
                    .collect(),
            })
            .collect();
        let mut order: Vec<usize> = (0..state.releases.len()).collect();
        order.sort_by_key(|&r| std::cmp::Reverse(state.releases[r].ordinal));
        let releases = order.into_iter().map(|r| release_view(state, r)).collect();
        Ledger {
            pipeline: pipeline.clone(),
            environments,
            releases,
        }
    }

    /// The deployment live in `environment`.
    #[must_use]
    pub fn live_in(&self, environment: &str) -> Option<&Deployment> {
        self.environment(environment)?.live.as_ref()
    }

    /// The view of `environment`.
    #[must_use]
    pub fn environment(&self, environment: &str) -> Option<&EnvironmentView> {
        self.environments
            .iter()
            .find(|e| e.environment.as_str() == environment)
    }

    /// The view of `release`.
    #[must_use]
    pub fn release(&self, release: &str) -> Option<&ReleaseView> {
        self.releases.iter().find(|r| r.release.as_str() == release)
    }

    /// Where `self` and `other` first differ (`environment X` / `release Y` / `pipeline`).
    #[must_use]
    pub fn first_difference(&self, other: &Ledger) -> Option<String> {
        if self.pipeline != other.pipeline {
            return Some("pipeline".to_owned());
        }
        let envs = self
            .environments
            .iter()
            .map(Some)
            .chain(std::iter::repeat(None));
        for (mine, theirs) in envs.zip(other.environments.iter().map(Some).chain([None])) {
            match (mine, theirs) {
                (None, None) => break,
                (Some(a), Some(b)) if a == b => {}
                (a, b) => {
                    let name = a
                        .or(b)
                        .map(|e| e.environment.to_string())
                        .unwrap_or_default();
                    return Some(format!("environment `{name}`"));
                }
            }
        }
        let releases = self
            .releases
            .iter()
            .map(Some)
            .chain(std::iter::repeat(None));
        for (mine, theirs) in releases.zip(other.releases.iter().map(Some).chain([None])) {
            match (mine, theirs) {
                (None, None) => break,
                (Some(a), Some(b)) if a == b => {}
                (a, b) => {
                    let name = a.or(b).map(|r| r.release.to_string()).unwrap_or_default();
                    return Some(format!("release `{name}`"));
                }
            }
        }
        None
    }
}

fn release_view(state: &State, r: usize) -> ReleaseView {
    let parked = &state.releases[r];
    let r32 = r as u32;
    let live_in = state
        .envs
        .iter()
        .filter(|e| e.live_release() == Some(r32))
        .map(|e| e.name.clone())
        .collect();
    let mut waiting = Vec::new();
    for env in &state.envs {
        for &i in &env.pending {
            if env.tickets[i].release == r32 {
                waiting.push(Waiting::Lock {
                    environment: env.name.clone(),
                    held_by: env.lock.map(|(h, _)| env.tickets[h].seq),
                });
            }
        }
    }
    for env in &state.envs {
        let moot = env
            .live_release()
            .is_some_and(|l| l == r32 || state.newer(l, r32));
        for (_, gates) in env.parked.iter().filter(|(p, _)| *p == r32 && !moot) {
            for g in gates {
                if let crate::lifecycle::Verdict::Pending { waiting_for, until } = &g.verdict {
                    waiting.push(Waiting::Gate {
                        environment: env.name.clone(),
                        gate: g.gate.clone(),
                        waiting_for: waiting_for.clone(),
                        until: *until,
                    });
                }
            }
        }
    }
    let phases = state.lifecycle.phases();
    let entered = |p: usize| {
        state
            .envs
            .iter()
            .enumerate()
            .any(|(e, env)| env.phase == p && (parked.live_in.contains(&(e as u32))))
    };
    let next_phase = (0..phases.len()).find(|&p| !entered(p));
    if let Some(p) = next_phase {
        let phase = &phases[p];
        if let PhaseEntry::People(people) = phase.entry() {
            waiting.push(Waiting::Person {
                phase: phase.name().to_owned(),
                people: people.iter().cloned().collect(),
            });
        }
        if p + 1 == phases.len() && parked.approved_at.is_none() {
            waiting.push(Waiting::Approval {
                phase: phase.name().to_owned(),
            });
        }
    }
    ReleaseView {
        release: parked.id.clone(),
        digest: parked.artifact.digest.clone(),
        registered_at: parked.registered_at,
        live_in,
        next_phase: next_phase.map(|p| phases[p].name().to_owned()),
        waiting,
    }
}

impl fmt::Display for Ledger {
    /// The dashboard: a releases × environments table (newest release first; `LIVE`, `was`
    /// live, `run`ning, `queue`d, `FAIL`ed, `super`seded, `-`), then each environment's live
    /// release (since when, by whom, how) and what waits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |s: &str| s.chars().count();
        let first = self
            .releases
            .iter()
            .map(|r| width(r.release.as_str()))
            .chain([7])
            .max()
            .unwrap_or(7);
        let mut header = format!("{:first$}", "release");
        let cols: Vec<usize> = self
            .environments
            .iter()
            .map(|e| width(e.environment.as_str()).max(5))
            .collect();
        for (env, w) in self.environments.iter().zip(&cols) {
            let _ = write!(header, " | {:w$}", env.environment.as_str());
        }
        writeln!(f, "{}", header.trim_end())?;
        writeln!(f, "{}", "-".repeat(width(header.trim_end())))?;
        for release in &self.releases {
            let mut line = format!("{:first$}", release.release.as_str());
            for (env, w) in self.environments.iter().zip(&cols) {
                let _ = write!(line, " | {:w$}", cell(env, &release.release));
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        for env in &self.environments {
            write!(f, "{} ({}): ", env.environment, env.phase)?;
            match &env.live {
                Some(d) => write!(
                    f,
                    "{} {} since {} by {} ({})",
                    d.release,
                    d.digest.short(),
                    status_at(&d.status),
                    d.by,
                    d.kind
                )?,
                None => f.write_str("nothing live")?,
            }
            if let Some(run) = &env.running {
                write!(f, "; running {} (ticket {})", run.release, run.ticket)?;
            }
            if !env.queue.is_empty() {
                let queued: Vec<&str> = env.queue.iter().map(|d| d.release.as_str()).collect();
                write!(f, "; queued {}", queued.join(", "))?;
            }
            writeln!(f)?;
        }
        for release in &self.releases {
            for waiting in &release.waiting {
                match waiting {
                    Waiting::Lock {
                        environment,
                        held_by,
                    } => {
                        write!(f, "{} waits for the lock of {environment}", release.release)?;
                        if let Some(ticket) = held_by {
                            write!(f, " (held by ticket {ticket})")?;
                        }
                    }
                    Waiting::Person { phase, people } => {
                        let people: Vec<&str> = people.iter().map(Person::as_str).collect();
                        write!(
                            f,
                            "{} waits for {} to promote it into {phase}",
                            release.release,
                            people.join(" or ")
                        )?;
                    }
                    Waiting::Approval { phase } => {
                        write!(f, "{} waits for approval before {phase}", release.release)?;
                    }
                    Waiting::Gate {
                        environment,
                        gate,
                        waiting_for,
                        until,
                    } => {
                        write!(
                            f,
                            "{} waits on gate `{gate}` for {environment}: {waiting_for}",
                            release.release
                        )?;
                        if let Some(until) = until {
                            write!(f, " (until {until})")?;
                        }
                    }
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// The state of `release` in `env`, as one word.
fn cell(env: &EnvironmentView, release: &ReleaseId) -> &'static str {
    if env.live.as_ref().is_some_and(|d| &d.release == release) {
        return "LIVE";
    }
    let mut word = "-";
    for d in env.history.iter().filter(|d| &d.release == release) {
        word = match d.status {
            TicketStatus::Queued => "queue",
            TicketStatus::Running { .. } => "run",
            TicketStatus::Deployed { .. } => "was",
            TicketStatus::Failed { .. } => "FAIL",
            TicketStatus::Superseded { .. } => "super",
            TicketStatus::Interrupted { .. } => "cut",
        };
    }
    word
}

fn status_at(status: &TicketStatus) -> String {
    match status {
        TicketStatus::Deployed { at } => at.to_string(),
        other => format!("{other:?}"),
    }
}
