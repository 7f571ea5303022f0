//! Who may approve, and how many: [`ApprovalPolicy`] made of [`Rule`]s over people and
//! groups, the [`Directory`] that resolves groups, the [`Ballot`] that collects [`Vote`]s, and
//! the [`Progress`] it has made.
//!
//! The policy is the only thing that issues the [`Approval`](super::Approval) capability, and
//! it re-checks every vote when it does: who voted, whether they may (directly or through a
//! group, as the directory says now), whether they wrote or triggered the change, and whether
//! their vote has expired. A ballot is plain data a bot can store; it proves nothing by itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::approval::{ApprovalRecord, ApprovalRequest, Signoff};
use crate::error::{Error, Result};
use crate::name::Person;
use crate::time::Timestamp;

/// Resolves groups to people: the host implements it from its own directory (LDAP, GitHub
/// teams, a config file).
///
/// Membership is asked when votes are counted, not when they are cast: someone removed from
/// a group stops counting at once.
///
/// ```
/// use tollgate::gate::{Directory, Groups};
///
/// let groups = Groups::new()
///     .group("release-managers", ["rita", "sam"])?
///     .group("security", ["sam", "ines"])?;
/// assert!(groups.is_member("sam", "security"));
/// assert!(!groups.is_member("rita", "security"));
/// # Ok::<(), tollgate::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tollgate directory",
    label = "this type does not implement `tollgate::gate::Directory`",
    note = "use `tollgate::gate::Groups` for a fixed table, or implement `fn is_member(&self, person: &str, group: &str) -> bool`"
)]
pub trait Directory: Send + Sync {
    /// Whether `person` belongs to `group`.
    fn is_member(&self, person: &str, group: &str) -> bool;
}

impl<D: Directory + ?Sized> Directory for &D {
    fn is_member(&self, person: &str, group: &str) -> bool {
        (**self).is_member(person, group)
    }
}

impl<D: Directory + ?Sized> Directory for Box<D> {
    fn is_member(&self, person: &str, group: &str) -> bool {
        (**self).is_member(person, group)
    }
}

impl<D: Directory + ?Sized> Directory for std::sync::Arc<D> {
    fn is_member(&self, person: &str, group: &str) -> bool {
        (**self).is_member(person, group)
    }
}

/// A fixed table of groups: the simplest [`Directory`], and a serde form of one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Groups(BTreeMap<String, BTreeSet<Person>>);

impl Groups {
    /// No groups.
    #[must_use]
    pub fn new() -> Self {
        Groups::default()
    }

    /// Adds `members` to `group` (creating it).
    pub fn group<I, P>(mut self, group: impl Into<String>, members: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let members = members
            .into_iter()
            .map(Person::new)
            .collect::<Result<BTreeSet<_>>>()?;
        self.0.entry(group.into()).or_default().extend(members);
        Ok(self)
    }

    /// Removes `person` from `group`; returns whether they were in it.
    pub fn remove(&mut self, group: &str, person: &str) -> bool {
        self.0.get_mut(group).is_some_and(|m| m.remove(person))
    }
}

impl Directory for Groups {
    fn is_member(&self, person: &str, group: &str) -> bool {
        self.0.get(group).is_some_and(|m| m.contains(person))
    }
}

/// A directory without groups: only people named directly in a rule may approve.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGroups;

impl Directory for NoGroups {
    fn is_member(&self, _person: &str, _group: &str) -> bool {
        false
    }
}

/// Someone a rule lets approve: a person, or every member of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approver {
    /// One person.
    Person(Person),
    /// Everyone the [`Directory`] says is in the group.
    Group(String),
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::Person(p) => write!(f, "{p}"),
            Approver::Group(g) => write!(f, "@{g}"),
        }
    }
}

/// One requirement of a policy: `need` distinct people from `approvers`.
///
/// ```
/// use tollgate::gate::Rule;
///
/// let rule = Rule::new("release-managers").group("release-managers").need(2);
/// assert_eq!(rule.to_string(), "release-managers: 2 of @release-managers");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    name: String,
    approvers: Vec<Approver>,
    need: usize,
    /// A person's name that failed validation in the builder chain, reported when the rule is
    /// added to a policy.
    #[serde(skip)]
    invalid: Option<String>,
}

impl Rule {
    /// A rule called `name` (how progress and errors refer to it) needing one approval from
    /// nobody yet: add people and groups.
    pub fn new(name: impl Into<String>) -> Self {
        Rule {
            name: name.into(),
            approvers: Vec::new(),
            need: 1,
            invalid: None,
        }
    }

    /// Lets `person` approve. An invalid name is reported by
    /// [`ApprovalPolicy::rule`] when the rule is added.
    #[must_use]
    pub fn person(mut self, person: impl Into<String>) -> Self {
        // The chain stays infallible; the first invalid name is reported by
        // `ApprovalPolicy::rule`.
        match Person::new(person) {
            Ok(p) => self.approvers.push(Approver::Person(p)),
            Err(e) => {
                self.invalid.get_or_insert(e.to_string());
            }
        }
        self
    }

    /// Lets every member of `group` approve.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.approvers.push(Approver::Group(group.into()));
        self
    }

    /// Needs `k` distinct people (default 1).
    #[must_use]
    pub fn need(mut self, k: usize) -> Self {
        self.need = k;
        self
    }

    /// The rule's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who may approve under this rule.
    #[must_use]
    pub fn approvers(&self) -> &[Approver] {
        &self.approvers
    }

    /// How many distinct people it needs.
    #[must_use]
    pub fn needed(&self) -> usize {
        self.need
    }

    /// Whether `person` may approve under this rule, as `directory` says now.
    pub fn admits(&self, person: &str, directory: &dyn Directory) -> bool {
        self.approvers.iter().any(|a| match a {
            Approver::Person(p) => p == person,
            Approver::Group(g) => directory.is_member(person, g),
        })
    }

    fn check(&self) -> Result<()> {
        let invalid = |reason: String| {
            Err(Error::InvalidGate {
                gate: format!("approval rule `{}`", self.name),
                reason,
            })
        };
        if let Some(reason) = &self.invalid {
            return invalid(reason.clone());
        }
        if self.name.trim().is_empty() {
            return invalid("a rule needs a name".to_owned());
        }
        if self.approvers.is_empty() {
            return invalid("it names no people or groups".to_owned());
        }
        if self.need == 0 {
            return invalid("it needs at least one approval".to_owned());
        }
        let people = self
            .approvers
            .iter()
            .filter(|a| matches!(a, Approver::Person(_)))
            .count();
        let has_group = self
            .approvers
            .iter()
            .any(|a| matches!(a, Approver::Group(_)));
        if !has_group && people < self.need {
            return invalid(format!(
                "it needs {} approvals but names only {people} people",
                self.need
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} of ", self.name, self.need)?;
        for (i, a) in self.approvers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
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
/// use tollgate::gate::{ApprovalPolicy, Rule};
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
            .collect::<Result<Vec<_>>>()?;
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
            r.approvers.iter().filter_map(|a| match a {
                Approver::Person(p) => Some(p),
                Approver::Group(_) => None,
            })
        })
    }

    /// Checks that `person` may cast a vote on `request` under this policy at all: a rule
    /// admits them and separation of duties does not exclude them.
    pub(crate) fn check_voter(
        &self,
        pipeline: &str,
        request: &ApprovalRequest,
        person: &Person,
        directory: &dyn Directory,
    ) -> Result<()> {
        if request.pipeline != pipeline {
            return Err(Error::ApprovalMismatch {
                approver: person.to_string(),
                field: "pipeline",
                approved: request.pipeline.clone(),
                actual: pipeline.to_owned(),
            });
        }
        if !self.admits(person.as_str(), directory) {
            return Err(Error::NotAnApprover {
                person: person.to_string(),
                pipeline: pipeline.to_owned(),
            });
        }
        if *person == request.author && !self.allow_self_approval {
            return Err(Error::SelfApproval {
                person: person.to_string(),
                revision: request.revision.clone(),
            });
        }
        if request.triggered_by.as_ref() == Some(person) && !self.allow_triggerer_approval {
            return Err(Error::TriggererApproval {
                person: person.to_string(),
                release: request.release.to_string(),
            });
        }
        Ok(())
    }

    /// Counts `ballot` at time `now`: which votes count for which rule, and what is missing.
    #[must_use]
    pub fn progress(&self, ballot: &Ballot, directory: &dyn Directory, now: Timestamp) -> Progress {
        let request = &ballot.request;
        // The latest vote of each person who may vote at all, and has not expired.
        let mut latest: BTreeMap<&Person, &Vote> = BTreeMap::new();
        for vote in &ballot.votes {
            latest.insert(&vote.person, vote);
        }
        let mut expired = Vec::new();
        let current: Vec<&Vote> = latest
            .into_values()
            .filter(|vote| {
                let excluded = (vote.person == request.author && !self.allow_self_approval)
                    || (request.triggered_by.as_ref() == Some(&vote.person)
                        && !self.allow_triggerer_approval)
                    || !self.admits(vote.person.as_str(), directory);
                let live = now < vote.at.saturating_add(self.valid_for);
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
                rule: rule.name.clone(),
                need: rule.need,
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
    pub(crate) fn complete(
        &self,
        ballot: &Ballot,
        directory: &dyn Directory,
        now: Timestamp,
    ) -> Result<ApprovalRecord> {
        let progress = self.progress(ballot, directory, now);
        if let Some(rejection) = &progress.rejection {
            return Err(Error::ApprovalRejected {
                person: rejection.person.to_string(),
                reason: rejection.reason.clone(),
            });
        }
        if !progress.is_met() {
            return Err(Error::ApprovalIncomplete {
                release: ballot.request.release.to_string(),
                waiting_for: progress.to_string(),
            });
        }
        let request = &ballot.request;
        let counted: BTreeSet<&Person> =
            progress.rules.iter().flat_map(|r| &r.approved_by).collect();
        let mut signoffs: Vec<Signoff> = ballot
            .votes
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
                self_approved: v.person == request.author,
                triggerer_approved: request.triggered_by.as_ref() == Some(&v.person),
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
    type Error = Error;

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

/// A person's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Yes.
    Approve,
    /// "Changes requested": blocks the approval while it counts.
    Reject,
}

/// One person's answer to an approval request, with their reason and the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Who.
    pub person: Person,
    /// What they said.
    pub decision: Decision,
    /// Why, in their words.
    pub reason: String,
    /// When (on the pipeline's clock).
    pub at: Timestamp,
}

/// The votes cast on one approval request: what a bot stores between chat messages.
///
/// Votes are added with [`Pipeline::vote`](crate::pipeline::Pipeline::vote), which checks
/// the voter, and counted by [`Pipeline::progress`](crate::pipeline::Pipeline::progress) and
/// [`Pipeline::issue`](crate::pipeline::Pipeline::issue), which re-check every vote against
/// the policy, the directory and the clock: a ballot edited by hand gains nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    request: ApprovalRequest,
    votes: Vec<Vote>,
}

impl Ballot {
    /// An empty ballot for `request`.
    #[must_use]
    pub fn new(request: ApprovalRequest) -> Self {
        Ballot {
            request,
            votes: Vec::new(),
        }
    }

    /// What is being decided.
    #[must_use]
    pub fn request(&self) -> &ApprovalRequest {
        &self.request
    }

    /// Every vote cast, oldest first (a person's latest vote is the one that counts).
    #[must_use]
    pub fn votes(&self) -> &[Vote] {
        &self.votes
    }

    pub(crate) fn push(&mut self, vote: Vote) {
        self.votes.push(vote);
    }
}

/// How far one rule has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleProgress {
    /// The rule's name.
    pub rule: String,
    /// How many distinct people it needs.
    pub need: usize,
    /// The distinct people whose current approval counts for it.
    pub approved_by: Vec<Person>,
}

impl RuleProgress {
    /// Whether the rule is met.
    #[must_use]
    pub fn is_met(&self) -> bool {
        self.approved_by.len() >= self.need
    }
}

/// How far a ballot has come under a policy: per rule, any rejection, and votes that expired.
///
/// Its `Display` is the sentence a bot posts: `release-managers 2 of 3 (rita, sam), waiting
/// for security 0 of 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Every rule, in the policy's order.
    pub rules: Vec<RuleProgress>,
    /// The latest current rejection, which blocks the approval.
    pub rejection: Option<Vote>,
    /// People whose votes no longer count because they expired.
    pub expired: Vec<Person>,
}

impl Progress {
    /// Whether there are rules, every one is met, and nobody rejects. A policy without rules
    /// is never met: it names nobody who could approve.
    #[must_use]
    pub fn is_met(&self) -> bool {
        self.rejection.is_none()
            && !self.rules.is_empty()
            && self.rules.iter().all(RuleProgress::is_met)
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.rejection {
            return write!(f, "rejected by {}: {}", r.person, r.reason);
        }
        if self.rules.is_empty() {
            return f.write_str("the policy has no rules");
        }
        let describe = |r: &RuleProgress| {
            let mut s = format!("{} {} of {}", r.rule, r.approved_by.len(), r.need);
            if !r.approved_by.is_empty() {
                let names: Vec<&str> = r.approved_by.iter().map(Person::as_str).collect();
                // Writing to a String cannot fail.
                let _ = write!(s, " ({})", names.join(", "));
            }
            s
        };
        let met: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.is_met())
            .map(describe)
            .collect();
        let open: Vec<String> = self
            .rules
            .iter()
            .filter(|r| !r.is_met())
            .map(describe)
            .collect();
        match (met.is_empty(), open.is_empty()) {
            (_, true) => write!(f, "approved: {}", met.join(", "))?,
            (true, false) => write!(f, "waiting for {}", open.join(", "))?,
            (false, false) => write!(f, "{}, waiting for {}", met.join(", "), open.join(", "))?,
        }
        if !self.expired.is_empty() {
            let names: Vec<&str> = self.expired.iter().map(Person::as_str).collect();
            write!(f, " (expired: {})", names.join(", "))?;
        }
        Ok(())
    }
}
