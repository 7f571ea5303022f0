//! [`PhasesPassed`]: the gate that makes `Staged` mean, in a fleet, "passed every
//! pre-production phase": put on [`Move::Stage`](crate::lifecycle::Move::Stage), it stays
//! pending until the fleet's facts show the release live in enough environments of every
//! pre-production phase.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;

use super::fact::{FleetFact, environment_key};
use super::phases::Lifecycle;
use crate::gate::{Gate, GateContext};
use crate::id::{IdError, PipelineName};
use crate::journal::{Journal, check_key_chain};
use crate::lifecycle::Verdict;

/// A gate for [`Move::Stage`](crate::lifecycle::Move::Stage) that enforces a fleet's
/// pre-production phases: open once the release went live (a deployment that succeeded, as
/// the fleet's facts in the journal say) in enough environments of every phase but the last
/// ([`PhaseRule`](super::PhaseRule): all, at least k, optional); pending until then, naming
/// the first phase not passed. It reads the journal the pipeline writes (give it the same
/// one, behind an `Arc`), checking each environment's chain under the journal's key: it
/// believes only facts the crate wrote. The fleet's production promotion checks the same
/// rules again on its own.
///
/// ```
/// # use std::sync::Arc;
/// # use tollgate::prelude::*;
/// use tollgate::fleet::{Lifecycle, Phase, PhasesPassed};
/// use tollgate::journal::{ChainKey, Journal, MemoryJournal};
/// let lifecycle = Lifecycle::new([
///     Phase::new("dev").environment("dev")?,
///     Phase::new("production").environment("prod")?,
/// ])?;
/// let journal: Arc<MemoryJournal> = Arc::new(MemoryJournal::new(ChainKey::derive(b"key")));
/// let reads: Arc<dyn Journal> = journal.clone();
/// let pipeline = Pipeline::<Deployment>::builder("shop")
///     .journal(journal)
///     .gate(Move::Stage, PhasesPassed::new("shop", lifecycle, reads)?);
/// # let _ = pipeline;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PhasesPassed {
    pipeline: PipelineName,
    lifecycle: Lifecycle,
    journal: Arc<dyn Journal>,
}

impl std::fmt::Debug for PhasesPassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhasesPassed")
            .field("pipeline", &self.pipeline)
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl PhasesPassed {
    /// The gate for the fleet of `pipeline` (its name) over `lifecycle`, reading `journal`.
    pub fn new(
        pipeline: impl Into<String>,
        lifecycle: Lifecycle,
        journal: Arc<dyn Journal>,
    ) -> Result<Self, IdError> {
        Ok(PhasesPassed {
            pipeline: PipelineName::new(pipeline)?,
            lifecycle,
            journal,
        })
    }

    /// The environments where `release` went live, as the fleet's facts say.
    async fn live_in(&self, release: &str) -> Result<BTreeSet<String>, String> {
        let mut live = BTreeSet::new();
        let phases = self.lifecycle.phases();
        let pre_production = &phases[..phases.len().saturating_sub(1)];
        for environment in pre_production.iter().flat_map(super::Phase::environments) {
            let key = environment_key(&self.pipeline, environment);
            let stored = self
                .journal
                .read_key(&key)
                .await
                .map_err(|e| e.to_string())?;
            check_key_chain(self.journal.key(), &stored).map_err(|e| e.to_string())?;
            let mut tickets = HashMap::new();
            for entry in &stored {
                match FleetFact::from_stored(entry, &self.pipeline)? {
                    FleetFact::Queued { release: r, .. } => {
                        tickets.insert(entry.seq, r);
                    }
                    FleetFact::Finished { ticket, report, .. }
                        if report.succeeded()
                            && tickets.get(&ticket).is_some_and(|r| r.as_str() == release) =>
                    {
                        live.insert(environment.to_string());
                    }
                    _ => {}
                }
            }
        }
        Ok(live)
    }
}

#[async_trait]
impl Gate for PhasesPassed {
    async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict {
        let release = ctx.release().id().as_str();
        let live = match self.live_in(release).await {
            Ok(live) => live,
            Err(reason) => return Verdict::closed(format!("the fleet's facts: {reason}")),
        };
        let phases = self.lifecycle.phases();
        for phase in &phases[..phases.len().saturating_sub(1)] {
            let count = phase
                .environments()
                .filter(|e| live.contains(e.as_str()))
                .count();
            if !phase.passed_with(count) {
                return Verdict::pending(format!(
                    "release `{release}` to pass phase `{}` ({:?}, live in {count})",
                    phase.name(),
                    phase.progress_rule()
                ));
            }
        }
        Verdict::Open
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("fleet phases passed")
    }
}
