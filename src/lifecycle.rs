//! The lifecycle in one table: the release states ([`StateName`] and the typestate markers
//! [`Commit`] … [`Deployed`]), the modes ([`Delivery`], [`Deployment`]), the [`Move`]s
//! between states, the [`Step`] of stages each move runs, the environment it aims at, and the
//! [`Verdict`] a gate gives on a move.
//!
//! Every other module reads the lifecycle from here; nothing else maps a state to its next
//! move or a move to its step.
//!
//! | state | next move | step it runs | aimed at | state after |
//! |---|---|---|---|---|
//! | Commit | build | build | target | Built |
//! | Built | test | test | target | Tested |
//! | Tested | stage | stage | staging | Staged |
//! | Staged | approve | none (a person, or the automated gates) | target | Approved |
//! | Approved | deploy | deploy | target | Deployed |
//! | Deployed | none | | | |

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::Person;
use crate::time::Timestamp;

mod private {
    /// Seals [`State`](super::State), [`Mode`](super::Mode) and the mode capabilities: only
    /// tollgate defines them.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a release state or mode: tollgate's lifecycle is sealed",
        label = "not one of tollgate's states or modes",
        note = "the states are Commit, Built, Tested, Staged, Approved and Deployed; the modes are Delivery (a person approves) and Deployment (automated gates approve)",
        note = "to model more environments or phases, configure the pipeline (environments, gates); the lifecycle itself is fixed"
    )]
    pub trait Sealed {}
}

/// The name of a release state, for storage and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    /// Started from a revision; nothing has run.
    Commit,
    /// Built: the artifact and its digest are fixed.
    Built,
    /// The artifact passed its tests.
    Tested,
    /// The artifact runs in staging and passed acceptance there.
    Staged,
    /// Approved for the target environment (by a person, or by the automated gates).
    Approved,
    /// Running in the target environment.
    Deployed,
}

impl StateName {
    /// The state's lower-case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            StateName::Commit => "commit",
            StateName::Built => "built",
            StateName::Tested => "tested",
            StateName::Staged => "staged",
            StateName::Approved => "approved",
            StateName::Deployed => "deployed",
        }
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which practice a pipeline follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeKind {
    /// Continuous delivery: a person approves each production release.
    Delivery,
    /// Continuous deployment: passing every automated gate is the approval.
    Deployment,
}

impl fmt::Display for ModeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModeKind::Delivery => "delivery",
            ModeKind::Deployment => "deployment",
        })
    }
}

/// A release state marker. Sealed: the six states are tollgate's.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a release state",
    note = "the states are Commit, Built, Tested, Staged, Approved and Deployed; the set is sealed and cannot be extended"
)]
pub trait State: private::Sealed + Send + Sync + 'static {
    /// The state's name.
    const NAME: StateName;
}

/// A pipeline mode marker. Sealed: the two modes are tollgate's.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pipeline mode",
    note = "the modes are Delivery (a person approves) and Deployment (automated gates approve); the set is sealed"
)]
pub trait Mode: private::Sealed + Send + Sync + 'static {
    /// The mode's name.
    const KIND: ModeKind;
}

macro_rules! marker {
    ($(#[$doc:meta])* $name:ident = $value:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}
        impl private::Sealed for $name {}
        impl State for $name {
            const NAME: StateName = $value;
        }
    };
}

marker!(
    /// A release that has been started from a revision; next: [`Release::build`](crate::release::Release::build).
    Commit = StateName::Commit
);
marker!(
    /// A release whose artifact is built and whose digest is fixed; next: [`Release::test`](crate::release::Release::test).
    Built = StateName::Built
);
marker!(
    /// A release whose artifact passed its tests; next: [`Release::stage`](crate::release::Release::stage).
    Tested = StateName::Tested
);
marker!(
    /// A release running in staging; next: [`Release::approve`](crate::release::Release::approve) (delivery) or
    /// [`Release::auto_approve`](crate::release::Release::auto_approve) (deployment).
    Staged = StateName::Staged
);
marker!(
    /// A release approved for its target environment; next: [`Release::deploy`](crate::release::Release::deploy).
    Approved = StateName::Approved
);
marker!(
    /// A release running in its target environment. The end of the line.
    Deployed = StateName::Deployed
);

/// Continuous delivery: a person must approve before production.
#[derive(Debug)]
pub enum Delivery {}
impl private::Sealed for Delivery {}
impl Mode for Delivery {
    const KIND: ModeKind = ModeKind::Delivery;
}

/// Continuous deployment: the automated gates alone approve.
#[derive(Debug)]
pub enum Deployment {}
impl private::Sealed for Deployment {}
impl Mode for Deployment {
    const KIND: ModeKind = ModeKind::Deployment;
}

/// The lifecycle step a stage belongs to. Steps run in this order, one per release move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Compile and package: produces the release's one artifact (Commit → Built).
    Build,
    /// Test the artifact (Built → Tested).
    Test,
    /// Deploy to staging and run acceptance tests there (Tested → Staged).
    Stage,
    /// Deploy to production (Approved → Deployed).
    Deploy,
}

impl Step {
    /// Every step, in run order.
    pub const ALL: [Step; 4] = [Step::Build, Step::Test, Step::Stage, Step::Deploy];

    /// The step's lower-case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::Build => "build",
            Step::Test => "test",
            Step::Stage => "stage",
            Step::Deploy => "deploy",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode in which a person approves: [`Delivery`] only. Pipelines take approval policies and
/// releases take an [`Approval`](crate::approval::Approval) only in such a mode.
#[diagnostic::on_unimplemented(
    message = "a {Self} pipeline takes no human approval: its automated gates approve (`auto_approve`); for a person to approve, use `Pipeline::<Delivery>`",
    label = "continuous deployment ships on its automated gates alone",
    note = "approval policies, `approval_request` and `approve` exist only in delivery mode, where a person must say yes before production"
)]
pub trait HumanApproval: Mode {}
impl HumanApproval for Delivery {}

/// A mode in which the automated gates approve: [`Deployment`] only.
#[diagnostic::on_unimplemented(
    message = "a {Self} release needs a person's approval: call `approve` with an `Approval`, or use `Pipeline::<Deployment>`",
    label = "continuous delivery does not ship without a person",
    note = "get the `Approval` from `pipeline.sign_off(&staged.approval_request(), \"rita\", \"why\")` or from a ballot with `pipeline.issue(&ballot)`"
)]
pub trait AutomaticApproval: Mode {}
impl AutomaticApproval for Deployment {}

/// A move of a release from one state to the next; gates attach to moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Move {
    /// Commit → Built.
    Build,
    /// Built → Tested.
    Test,
    /// Tested → Staged.
    Stage,
    /// Staged → Approved.
    Approve,
    /// Approved → Deployed.
    Deploy,
}

impl Move {
    /// The move's lower-case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Move::Build => "build",
            Move::Test => "test",
            Move::Stage => "stage",
            Move::Approve => "approve",
            Move::Deploy => "deploy",
        }
    }
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gate's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Verdict {
    /// The move may happen.
    Open,
    /// A person opened a gate that would otherwise block (a change-window override, a
    /// break-glass deploy); counts as open, and records who and why.
    Overridden {
        /// Who opened it.
        by: Person,
        /// Why, in their words.
        reason: String,
    },
    /// The move may not happen.
    Closed {
        /// Why.
        reason: String,
    },
    /// The gate has not decided yet.
    Pending {
        /// What it waits for: a person, a verdict, a time.
        waiting_for: String,
        /// When it will decide on its own, if it knows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Timestamp>,
    },
}

impl Verdict {
    /// A closed verdict.
    pub fn closed(reason: impl Into<String>) -> Self {
        Verdict::Closed {
            reason: reason.into(),
        }
    }

    /// A pending verdict with no known deadline.
    pub fn pending(waiting_for: impl Into<String>) -> Self {
        Verdict::Pending {
            waiting_for: waiting_for.into(),
            until: None,
        }
    }

    /// Whether the gate is open (or was opened by a person's override).
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(self, Verdict::Open | Verdict::Overridden { .. })
    }
}

impl fmt::Display for Verdict {
    /// `open`, `open (overridden by rita: hotfix)`, `closed: <reason>`,
    /// `pending: <what it waits for>` with `until @<ms>` when known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Open => f.write_str("open"),
            Verdict::Overridden { by, reason } => write!(f, "open (overridden by {by}: {reason})"),
            Verdict::Closed { reason } => write!(f, "closed: {reason}"),
            Verdict::Pending {
                waiting_for,
                until: None,
            } => write!(f, "pending: {waiting_for}"),
            Verdict::Pending {
                waiting_for,
                until: Some(until),
            } => write!(f, "pending until {until}: {waiting_for}"),
        }
    }
}

/// Which of a release's environments a move is aimed at: the gates of that environment guard
/// the move, and the stages of its step deploy there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aim {
    /// The staging environment (the stage move).
    Staging,
    /// The release's target environment (every other move).
    Target,
}

impl StateName {
    /// Every state, in lifecycle order.
    pub const ALL: [StateName; 6] = [
        StateName::Commit,
        StateName::Built,
        StateName::Tested,
        StateName::Staged,
        StateName::Approved,
        StateName::Deployed,
    ];

    /// The move that leaves this state, or `None` for [`StateName::Deployed`], the end of the
    /// line.
    ///
    /// ```
    /// use tollgate::lifecycle::{Move, StateName};
    /// assert_eq!(StateName::Staged.next_move(), Some(Move::Approve));
    /// assert_eq!(StateName::Deployed.next_move(), None);
    /// ```
    #[must_use]
    pub const fn next_move(self) -> Option<Move> {
        match self {
            StateName::Commit => Some(Move::Build),
            StateName::Built => Some(Move::Test),
            StateName::Tested => Some(Move::Stage),
            StateName::Staged => Some(Move::Approve),
            StateName::Approved => Some(Move::Deploy),
            StateName::Deployed => None,
        }
    }
}

impl Move {
    /// Every move, in lifecycle order.
    pub const ALL: [Move; 5] = [
        Move::Build,
        Move::Test,
        Move::Stage,
        Move::Approve,
        Move::Deploy,
    ];

    /// The state the move starts from.
    #[must_use]
    pub const fn from(self) -> StateName {
        match self {
            Move::Build => StateName::Commit,
            Move::Test => StateName::Built,
            Move::Stage => StateName::Tested,
            Move::Approve => StateName::Staged,
            Move::Deploy => StateName::Approved,
        }
    }

    /// The state the move reaches.
    #[must_use]
    pub const fn to(self) -> StateName {
        match self {
            Move::Build => StateName::Built,
            Move::Test => StateName::Tested,
            Move::Stage => StateName::Staged,
            Move::Approve => StateName::Approved,
            Move::Deploy => StateName::Deployed,
        }
    }

    /// The step of stages the move runs; `None` for [`Move::Approve`], which runs no stages
    /// (a person decides in delivery mode, the automated gates in deployment mode).
    ///
    /// ```
    /// use tollgate::lifecycle::{Move, Step};
    /// assert_eq!(Move::Deploy.step(), Some(Step::Deploy));
    /// assert_eq!(Move::Approve.step(), None);
    /// ```
    #[must_use]
    pub const fn step(self) -> Option<Step> {
        match self {
            Move::Build => Some(Step::Build),
            Move::Test => Some(Step::Test),
            Move::Stage => Some(Step::Stage),
            Move::Approve => None,
            Move::Deploy => Some(Step::Deploy),
        }
    }

    /// The environment the move is aimed at: staging for the stage move, the release's
    /// target for every other one.
    #[must_use]
    pub const fn aim(self) -> Aim {
        match self {
            Move::Stage => Aim::Staging,
            Move::Build | Move::Test | Move::Approve | Move::Deploy => Aim::Target,
        }
    }

    /// Whether the move deploys into its environment (stage and deploy), so that the
    /// environment's own gates guard it.
    #[must_use]
    pub const fn deploys(self) -> bool {
        matches!(self, Move::Stage | Move::Deploy)
    }
}

impl Step {
    /// The move that runs this step.
    #[must_use]
    pub const fn run_by(self) -> Move {
        match self {
            Step::Build => Move::Build,
            Step::Test => Move::Test,
            Step::Stage => Move::Stage,
            Step::Deploy => Move::Deploy,
        }
    }

    /// The state a release reaches when this step succeeds.
    #[must_use]
    pub const fn reaches(self) -> StateName {
        self.run_by().to()
    }

    /// Whether the step's stages deploy into an environment (stage and deploy), and so are
    /// told which one.
    #[must_use]
    pub const fn deploys(self) -> bool {
        self.run_by().deploys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verdict's text is what reports, explanations and chat messages show for a gate: each
    /// kind says what it is, who overrode it and why, or what it waits for and until when.
    #[test]
    fn a_verdict_says_what_it_is_in_words() {
        let rita = crate::id::Person::new("rita").expect("a valid name");
        let cases = [
            (Verdict::Open, "open"),
            (
                Verdict::Overridden {
                    by: rita,
                    reason: "hotfix".into(),
                },
                "open (overridden by rita: hotfix)",
            ),
            (Verdict::closed("tests failed"), "closed: tests failed"),
            (Verdict::pending("two approvals"), "pending: two approvals"),
            (
                Verdict::Pending {
                    waiting_for: "the change window".into(),
                    until: Some(crate::time::Timestamp::from_millis(5_000)),
                },
                "pending until @5000ms: the change window",
            ),
        ];
        for (verdict, text) in cases {
            assert_eq!(verdict.to_string(), text);
        }
    }

    /// The whole table, written out once more by hand: a change to any mapping must change
    /// this test too.
    #[test]
    fn the_table_is_the_lifecycle() {
        let rows = [
            (
                StateName::Commit,
                Some((
                    Move::Build,
                    Some(Step::Build),
                    Aim::Target,
                    StateName::Built,
                )),
            ),
            (
                StateName::Built,
                Some((Move::Test, Some(Step::Test), Aim::Target, StateName::Tested)),
            ),
            (
                StateName::Tested,
                Some((
                    Move::Stage,
                    Some(Step::Stage),
                    Aim::Staging,
                    StateName::Staged,
                )),
            ),
            (
                StateName::Staged,
                Some((Move::Approve, None, Aim::Target, StateName::Approved)),
            ),
            (
                StateName::Approved,
                Some((
                    Move::Deploy,
                    Some(Step::Deploy),
                    Aim::Target,
                    StateName::Deployed,
                )),
            ),
            (StateName::Deployed, None),
        ];
        for (state, row) in rows {
            let got = state.next_move().map(|m| (m, m.step(), m.aim(), m.to()));
            assert_eq!(got, row, "{state}");
            if let Some(m) = state.next_move() {
                assert_eq!(m.from(), state);
            }
        }
        assert_eq!(StateName::ALL.len(), 6);
        for step in Step::ALL {
            assert_eq!(step.run_by().step(), Some(step));
            assert_eq!(step.reaches(), step.run_by().to());
        }
        let deploying: Vec<Move> = Move::ALL.into_iter().filter(|m| m.deploys()).collect();
        assert_eq!(deploying, [Move::Stage, Move::Deploy]);
        let deploying: Vec<Step> = Step::ALL.into_iter().filter(|s| s.deploys()).collect();
        assert_eq!(deploying, [Step::Stage, Step::Deploy]);
        for (i, m) in Move::ALL.into_iter().enumerate() {
            assert_eq!(m.from(), StateName::ALL[i]);
            assert_eq!(m.to(), StateName::ALL[i + 1]);
        }
    }

    #[test]
    fn names_are_lower_case() {
        assert_eq!(StateName::Approved.to_string(), "approved");
        assert_eq!(Move::Approve.to_string(), "approve");
        assert_eq!(Step::Stage.to_string(), "stage");
        assert_eq!(ModeKind::Deployment.to_string(), "deployment");
        assert_eq!(Commit::NAME, StateName::Commit);
        assert_eq!(Deployed::NAME, StateName::Deployed);
        assert_eq!(Delivery::KIND, ModeKind::Delivery);
    }
}
