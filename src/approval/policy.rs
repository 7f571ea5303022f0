//! [`ApprovalPolicy`]: who may approve, how many of them, for how long; it checks voters,
//! counts ballots and completes them into an approval record.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ApprovalError, ApprovalRequest, Approver, Ballot, Decision, Directory, NoGroups, Progress,
    Rule, RuleProgress, Vote,
};
use crate::id::{IdError, Person, PipelineName};
use crate::record::{ApprovalRecord, Signoff};
use crate::time::Timestamp;

type Result<T, E = ApprovalError> = std::result::Result<T, E>;

/// Whether `a` and `b` are one person, as `directory` names people.
fn same(directory: &dyn Directory, a: &Person, b: &Person) -> bool {
    a == b || directory.canonical(a.as_str()) == directory.canonical(b.as_str())
}

/// Who may approve releases of a delivery pipeline, how many of them, and for how long an
/// approval counts.
///
/// A policy is a list of [`Rule`]s; every rule must be met. A person counts once per rule
/// however many of its groups they are in, and one person's approval counts towards every
/// rule that admits them (as in GitLab's approval rules). By default neither the author of
/// the change nor whoever triggered the pipeline may approve it; each relaxation is explicit
/// and recorded with the approvals it allows. A rejection from anyone a rule admits blocks
/// the approval until they change their vote or it expires.
///
/// ```
/// use std::time::Duration;
/// use tollgate::approval::{ApprovalPolicy, Rule};
///
/// let policy = ApprovalPolicy::new()
///     .rule(Rule::new("release-managers").group("release-managers").need(2))?
///     .rule(Rule::new("security").group("security"))?
///     .valid_for(Duration::from_secs(8 * 3600));
/// assert_eq!(policy.rules().len(), 2);
///
/// // The one-line form: any one of these people.
/// let simple = ApprovalPolicy::any_of(["rita", "sam"])?;
/// assert!(simple.may_approve("rita"));
/// # Ok::<(), tollgate::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PolicyData")]
pub struct ApprovalPolicy {
    rules: Vec<Rule>,
    #[serde(with = "crate::time::millis")]
    valid_for: Duration,
    #[serde(default)]
    allow_self_approval: bool,
    #[serde(default)]
    allow_triggerer_approval: bool,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        ApprovalPolicy::new()
    }
}

impl ApprovalPolicy {
    /// How long an approval counts unless told otherwise: 24 hours.
    pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

    /// A policy with no rules yet (it cannot be met until one is added), 24-hour validity,
    /// and no relaxations.
    #[must_use]
    pub fn new() -> Self {
        ApprovalPolicy {
            rules: Vec::new(),
            valid_for: Self::DEFAULT_VALIDITY,
            allow_self_approval: false,
            allow_triggerer_approval: false,
        }
    }

    /// A policy under which any one of `people` may approve.
    pub fn any_of<I, P>(people: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let approvers = people
            .into_iter()
            .map(|p| Person::new(p).map(Approver::Person))
            .collect::<Result<Vec<_>, IdError>>()?;
        ApprovalPolicy::new().rule(Rule {
            name: "approvers".to_owned(),
            approvers,
            need: 1,
            invalid: None,
        })
    }

    /// Adds a rule, checking that it can be met (a name, someone to approve, `need` between
    /// 1 and the number of people named when it names no group).
    pub fn rule(mut self, rule: Rule) -> Result<Self> {
        rule.check()?;
        self.rules.push(rule);
        Ok(self)
    }

    /// Sets how long an approval (and a rejection) counts after it is given.
    #[must_use]
    pub fn valid_for(mut self, duration: Duration) -> Self {
        self.valid_for = duration;
        self
    }

    /// Lets the author of a change approve it. Off by default; the relaxation is recorded
    /// with every approval it allows.
    #[must_use]
    pub fn allow_self_approval(mut self, allow: bool) -> Self {
        self.allow_self_approval = allow;
        self
    }

    /// Lets whoever triggered the pipeline approve its release. Off by default; the
    /// relaxation is recorded with every approval it allows.
    #[must_use]
    pub fn allow_triggerer_approval(mut self, allow: bool) -> Self {
        self.allow_triggerer_approval = allow;
        self
    }

    /// The rules.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How long a vote counts.
    #[must_use]
    pub fn validity(&self) -> Duration {
        self.valid_for
    }

    /// Whether a release's author may approve it (see
    /// [`allow_self_approval`](Self::allow_self_approval)).
    #[must_use]
    pub fn self_approval_allowed(&self) -> bool {
        self.allow_self_approval
    }

    /// Whether whoever triggered the pipeline may approve the release (see
    /// [`allow_triggerer_approval`](Self::allow_triggerer_approval)).
    #[must_use]
    pub fn triggerer_approval_allowed(&self) -> bool {
        self.allow_triggerer_approval
    }

    /// Whether `person` is named directly by some rule (groups are not consulted; see
    /// [`ApprovalPolicy::admits`]).
    #[must_use]
    pub fn may_approve(&self, person: &str) -> bool {
        self.admits(person, &NoGroups)
    }

    /// Whether some rule admits `person`, as `directory` says now.
    pub fn admits(&self, person: &str, directory: &dyn Directory) -> bool {
        self.rules.iter().any(|r| r.admits(person, directory))
    }

    /// The people named directly by the rules.
    pub fn approvers(&self) -> impl Iterator<Item = &Person> + '_ {
        self.rules.iter().flat_map(|r| {
            r.approvers().iter().filter_map(|a| match a {
                Approver::Person(p) => Some(p),
                Approver::Group(_) => None,
            })
        })
    }

    /// Checks that `person` may cast a vote on `request` under this policy at all: a rule
    /// admits them and separation of duties does not exclude them.
    pub(crate) fn check_voter(
        &self,
        pipeline: &PipelineName,
        request: &ApprovalRequest,
        person: &Person,
        directory: &dyn Directory,
    ) -> Result<()> {
        if request.pipeline != *pipeline {
            return Err(ApprovalError::Mismatch {
                approver: Some(person.clone()),
                field: "pipeline",
                approved: request.pipeline.to_string(),
                actual: pipeline.to_string(),
            });
        }
        if !self.admits(person.as_str(), directory) {
            return Err(ApprovalError::NotAnApprover {
                person: person.clone(),
                pipeline: pipeline.clone(),
            });
        }
        if same(directory, person, &request.author) && !self.allow_self_approval {
            return Err(ApprovalError::SelfApproval {
                person: person.clone(),
                revision: request.revision.clone(),
            });
        }
        if request
            .triggered_by
            .as_ref()
            .is_some_and(|t| same(directory, person, t))
            && !self.allow_triggerer_approval
        {
            return Err(ApprovalError::TriggererApproval {
                person: person.clone(),
                release: request.release.clone(),
            });
        }
        Ok(())
    }

    /// Counts `ballot` at time `now`: which votes count for which rule, and what is missing.
    #[must_use]
    pub fn progress(&self, ballot: &Ballot, directory: &dyn Directory, now: Timestamp) -> Progress {
        let request = &ballot.request();
        // The latest vote of each person (as the directory names people: `Dana` and `dana`
        // are one person where it folds case) who may vote at all, and has not expired.
        let mut latest: BTreeMap<String, &Vote> = BTreeMap::new();
        for vote in ballot.votes() {
            latest.insert(directory.canonical(vote.person.as_str()), vote);
        }
        let mut expired = Vec::new();
        let current: Vec<&Vote> = latest
            .into_values()
            .filter(|vote| {
                let excluded = (same(directory, &vote.person, &request.author)
                    && !self.allow_self_approval)
                    || (request
                        .triggered_by
                        .as_ref()
                        .is_some_and(|t| same(directory, &vote.person, t))
                        && !self.allow_triggerer_approval)
                    || !self.admits(vote.person.as_str(), directory);
                // A vote from after `now` (a clock ahead, or a forged date) does not count yet.
                let live = vote.at <= now && now < vote.at.saturating_add(self.valid_for);
                if !excluded && !live {
                    expired.push(vote.person.clone());
                }
                !excluded && live
            })
            .collect();
        let rejection = current
            .iter()
            .filter(|v| v.decision == Decision::Reject)
            .max_by_key(|v| v.at)
            .map(|v| (*v).clone());
        let rules = self
            .rules
            .iter()
            .map(|rule| RuleProgress {
                rule: rule.name().to_owned(),
                need: rule.needed(),
                approved_by: current
                    .iter()
                    .filter(|v| {
                        v.decision == Decision::Approve && rule.admits(v.person.as_str(), directory)
                    })
                    .map(|v| v.person.clone())
                    .collect(),
            })
            .collect();
        Progress {
            rules,
            rejection,
            expired,
        }
    }

    /// Issues the record of a met policy, or says what is missing.
    /// Checks a recorded approval against the votes of `ballot`: it must be exactly what
    /// this policy gives from the votes the journal held when it was issued (approver,
    /// reason, times, expiry, signoffs, relaxations), issued no later than it was used, and at
    /// `used_at` unexpired with no current rejection on the ballot (every vote on a ballot in
    /// the journal passed the policy when it was cast).
    ///
    /// Group membership is the one thing taken as recorded (groups may have changed since):
    /// a signoff's claim to a group rule stands, while every other part of the record is
    /// re-derived. An approval that is still to be acted on is checked against today's
    /// directory when it is (the deploy move does).
    pub(crate) fn check_record(
        &self,
        ballot: &Ballot,
        record: &ApprovalRecord,
        used_at: Timestamp,
        directory: &dyn Directory,
    ) -> Result<()> {
        let mismatch = |approved: String, actual: String| ApprovalError::Mismatch {
            approver: Some(record.approver.clone()),
            field: "votes",
            approved,
            actual,
        };
        if record.issued_at > used_at {
            return Err(mismatch(
                format!("issued at {}", record.issued_at),
                format!("used at {used_at}"),
            ));
        }
        let claimed = Claimed {
            record,
            rules: &self.rules,
            inner: directory,
        };
        let derived = self.complete(
            &ballot.through(record.votes_through),
            &claimed,
            record.issued_at,
        )?;
        if let Some((field, recorded, given)) = first_difference(record, &derived) {
            return Err(ApprovalError::Mismatch {
                approver: Some(record.approver.clone()),
                field,
                approved: recorded,
                actual: format!("{given} (from the journal's votes)"),
            });
        }
        if used_at >= record.expires_at {
            return Err(ApprovalError::Expired {
                approver: record.approver.clone(),
                expired_at: record.expires_at,
                now: used_at,
            });
        }
        let mut latest: BTreeMap<String, &Vote> = BTreeMap::new();
        for vote in ballot.votes().iter().filter(|v| v.at <= used_at) {
            latest.insert(directory.canonical(vote.person.as_str()), vote);
        }
        for vote in latest.values() {
            if vote.decision == Decision::Reject && used_at < vote.at.saturating_add(self.valid_for)
            {
                return Err(ApprovalError::Rejected {
                    person: vote.person.clone(),
                    reason: vote.reason.clone(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn complete(
        &self,
        ballot: &Ballot,
        directory: &dyn Directory,
        now: Timestamp,
    ) -> Result<ApprovalRecord> {
        let progress = self.progress(ballot, directory, now);
        if let Some(rejection) = &progress.rejection {
            return Err(ApprovalError::Rejected {
                person: rejection.person.clone(),
                reason: rejection.reason.clone(),
            });
        }
        if !progress.is_met() {
            return Err(ApprovalError::Incomplete {
                release: ballot.request().release.clone(),
                waiting_for: progress.to_string(),
            });
        }
        let request = &ballot.request();
        let counted: BTreeSet<&Person> =
            progress.rules.iter().flat_map(|r| &r.approved_by).collect();
        let mut signoffs: Vec<Signoff> = ballot
            .votes()
            .iter()
            .rev()
            .filter(|v| counted.contains(&v.person))
            // Each person's latest vote only: they were counted by it.
            .scan(BTreeSet::new(), |seen, v| Some((seen.insert(&v.person), v)))
            .filter_map(|(first, v)| first.then_some(v))
            .map(|v| Signoff {
                person: v.person.clone(),
                reason: v.reason.clone(),
                at: v.at,
                rules: progress
                    .rules
                    .iter()
                    .filter(|r| r.approved_by.contains(&v.person))
                    .map(|r| r.rule.clone())
                    .collect(),
                self_approved: same(directory, &v.person, &request.author),
                triggerer_approved: request
                    .triggered_by
                    .as_ref()
                    .is_some_and(|t| same(directory, &v.person, t)),
            })
            .collect();
        signoffs.reverse();
        // The policy was met by the last of the counted votes; the approval lasts as long as
        // the earliest of them does.
        let last = signoffs
            .iter()
            .max_by_key(|s| s.at)
            .expect("a met policy with at least one rule has at least one counted vote");
        let earliest = signoffs.iter().map(|s| s.at).min().unwrap_or(last.at);
        Ok(ApprovalRecord {
            approver: last.person.clone(),
            reason: last.reason.clone(),
            issued_at: now,
            expires_at: earliest.saturating_add(self.valid_for),
            digest: request.digest.clone(),
            environment: request.environment.clone(),
            votes_through: ballot.last_position(),
            self_approved: signoffs.iter().any(|s| s.self_approved),
            triggerer_approved: signoffs.iter().any(|s| s.triggerer_approved),
            signoffs,
        })
    }
}

/// The serde form of a policy, checked rule by rule on the way in.
#[derive(Deserialize)]
struct PolicyData {
    rules: Vec<Rule>,
    #[serde(with = "crate::time::millis")]
    valid_for: Duration,
    #[serde(default)]
    allow_self_approval: bool,
    #[serde(default)]
    allow_triggerer_approval: bool,
}

impl TryFrom<PolicyData> for ApprovalPolicy {
    type Error = ApprovalError;

    fn try_from(data: PolicyData) -> Result<Self> {
        let mut policy = ApprovalPolicy::new()
            .valid_for(data.valid_for)
            .allow_self_approval(data.allow_self_approval)
            .allow_triggerer_approval(data.allow_triggerer_approval);
        for rule in data.rules {
            policy = policy.rule(rule)?;
        }
        Ok(policy)
    }
}

/// The first part in which a recorded approval differs from the one re-derived from the
/// votes: its name (as an [`ApprovalError::Mismatch`] field), the recorded value and the
/// derived one.
pub(crate) fn first_difference(
    recorded: &ApprovalRecord,
    derived: &ApprovalRecord,
) -> Option<(&'static str, String, String)> {
    // Every approve and deploy asks; only a mismatch needs the texts.
    if recorded == derived {
        return None;
    }
    let pairs: [(&'static str, String, String); 9] = [
        (
            "artifact",
            recorded.digest.to_string(),
            derived.digest.to_string(),
        ),
        (
            "environment",
            recorded.environment.to_string(),
            derived.environment.to_string(),
        ),
        (
            "approver",
            recorded.approver.to_string(),
            derived.approver.to_string(),
        ),
        ("reason", recorded.reason.clone(), derived.reason.clone()),
        (
            "issue time",
            recorded.issued_at.to_string(),
            derived.issued_at.to_string(),
        ),
        (
            "expiry",
            recorded.expires_at.to_string(),
            derived.expires_at.to_string(),
        ),
        (
            "votes",
            recorded.votes_through.to_string(),
            derived.votes_through.to_string(),
        ),
        (
            "relaxations",
            format!("{}/{}", recorded.self_approved, recorded.triggerer_approved),
            format!("{}/{}", derived.self_approved, derived.triggerer_approved),
        ),
        (
            "signoffs",
            format!(
                "{:?}",
                recorded
                    .signoffs
                    .iter()
                    .map(|s| (&s.person, &s.rules, s.at))
                    .collect::<Vec<_>>()
            ),
            format!(
                "{:?}",
                derived
                    .signoffs
                    .iter()
                    .map(|s| (&s.person, &s.rules, s.at))
                    .collect::<Vec<_>>()
            ),
        ),
    ];
    pairs.into_iter().find(|(_, a, b)| a != b).or_else(|| {
        (recorded != derived).then(|| {
            (
                "signoffs",
                "as recorded".to_owned(),
                "other reasons".to_owned(),
            )
        })
    })
}

/// The groups a recorded approval's signoffs claim, as a directory: membership of a group is
/// what a signoff claims through a rule naming that group. For re-deriving an approval of the
/// past without today's groups.
struct Claimed<'a> {
    record: &'a ApprovalRecord,
    rules: &'a [Rule],
    inner: &'a dyn Directory,
}

impl Directory for Claimed<'_> {
    fn is_member(&self, person: &str, group: &str) -> bool {
        let person = self.inner.canonical(person);
        self.record.signoffs.iter().any(|signoff| {
            self.inner.canonical(signoff.person.as_str()) == person
                && signoff.rules.iter().any(|claimed| {
                    self.rules.iter().any(|rule| {
                        rule.name() == claimed
                            && rule
                                .approvers()
                                .iter()
                                .any(|a| matches!(a, Approver::Group(g) if g == group))
                    })
                })
        })
    }

    fn canonical(&self, person: &str) -> String {
        self.inner.canonical(person)
    }
}
