//! The fleet's deployments as [CDEvents](https://cdevents.dev) v0.4 (feature `cdevents`),
//! built with the envelope of [`crate::cdevents`]: this module sits in the fleet because the
//! `cdevents` module, lower down, cannot import it.

use serde_json::Value;

use super::Fleet;
use super::fact::DeployKind;
use super::state::TicketStatus;
use crate::cdevents::{envelope, purl, service_subject};
use crate::lifecycle::Mode;
use crate::time::Timestamp;

impl<M: Mode> Fleet<M> {
    /// Every deployment of this fleet that went live, as CDEvents JSON, ordered by when each
    /// went live, from the facts this copy has read ([`refresh`](Self::refresh) first to see
    /// other processes' deployments).
    ///
    /// Each deployment that went live (its deploy stages succeeded) is one event whose subject
    /// is the service (the pipeline's name) in the environment, running the release's artifact
    /// (a `pkg:generic` package URL carrying the digest):
    ///
    /// | deployment | CDEvents (v0.4) |
    /// |---|---|
    /// | the first to go live in the environment | `service.deployed.0.2.0` |
    /// | a promotion over a live release | `service.upgraded.0.2.0` |
    /// | a rollback ([`DeployKind::Rollback`]) | `service.rolledback.0.2.0` |
    /// | a redeploy of the live release ([`DeployKind::Redeploy`]) | `service.deployed.0.2.0` (the spec's upgrade is "to a new version", and no version changed: the same artifact was deployed again) |
    ///
    /// Failed, superseded, interrupted, queued and running deployments make no event.
    ///
    /// Each event's `context.id` is `<source>#fleet/<environment>/<ticket>`, the same on
    /// every call and in every process, so a host that sends them on keeps the ids it sent
    /// and skips those.
    #[must_use]
    pub fn cdevents(&self, source: &str) -> Vec<Value> {
        let state = self.lock();
        let service = self.pipeline.name().as_str();
        let mut out: Vec<(Timestamp, u64, Value)> = Vec::new();
        for env in &state.envs {
            let mut anything_live = false;
            for ticket in &env.tickets {
                let TicketStatus::Deployed { at } = ticket.status else {
                    continue;
                };
                let kind = match ticket.kind {
                    DeployKind::Rollback { .. } => "service.rolledback",
                    DeployKind::Promote if anything_live => "service.upgraded",
                    DeployKind::Promote | DeployKind::Redeploy => "service.deployed",
                };
                anything_live = true;
                let artifact = &state.releases[ticket.release as usize].artifact;
                let environment = env.name.as_str();
                let subject = service_subject(source, service, environment, &purl(artifact));
                let id = format!("{source}#fleet/{environment}/{}", ticket.seq);
                out.push((at, ticket.seq, envelope(source, &id, kind, at, subject)));
            }
        }
        out.sort_by_key(|(at, seq, _)| (*at, *seq));
        out.into_iter().map(|(_, _, event)| event).collect()
    }
}
