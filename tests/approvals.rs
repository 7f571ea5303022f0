//! Approval policies: rules over people and groups, k of n distinct people, separation of
//! duties with recorded relaxations, rejections, expiry, per-environment policies, and a
//! property test against a brute-force reference evaluation of the same rules.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proptest::prelude::*;
use support::{AUTHOR, block_on, clock, standard_stages};
use tollgate::approval::{
    ApprovalError, ApprovalPolicy, Approver, Ballot, Decision, Directory, Groups, NoGroups,
    Progress, Rule,
};
use tollgate::error::{Error, ErrorKind};
use tollgate::id::Person;
use tollgate::lifecycle::StateName;
use tollgate::prelude::*;
use tollgate::time::ManualClock;

const HOUR: Duration = Duration::from_secs(3600);

/// A directory the test can change while the pipeline holds it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Groups>>);

impl Shared {
    fn new(groups: Groups) -> Self {
        Shared(Arc::new(Mutex::new(groups)))
    }

    fn remove(&self, group: &str, person: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(group, person);
    }
}

impl Directory for Shared {
    fn is_member(&self, person: &str, group: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_member(person, group)
    }
}

/// The organisation most tests use.
fn org() -> Groups {
    Groups::new()
        .group("release-managers", ["rita", "sam", "ines"])
        .unwrap()
        .group("security", ["ines", "omar"])
        .unwrap()
        .group("sre", ["ines", "pat"])
        .unwrap()
}

fn pipeline(
    clock: &ManualClock,
    policy: ApprovalPolicy,
    directory: impl Directory + 'static,
) -> Pipeline<Delivery> {
    Pipeline::<Delivery>::builder("shop")
        .clock(clock.clone())
        .stages(standard_stages())
        .approvals(policy)
        .directory(directory)
        .build()
        .expect("valid pipeline")
}

/// A staged release of revision `rev`, optionally triggered by `trigger`.
fn staged(
    pipeline: &Pipeline<Delivery>,
    rev: &str,
    trigger: Option<&str>,
) -> Release<Staged, Delivery> {
    let mut revision = Revision::new(rev, AUTHOR).unwrap();
    if let Some(trigger) = trigger {
        revision = revision.triggered_by(Person::new(trigger).unwrap());
    }
    block_on(async {
        let built = pipeline
            .start(format!("r-{rev}"), revision)
            .unwrap()
            .build(pipeline)
            .await
            .unwrap();
        let artifact = built.artifact().clone();
        let tested = built.test(pipeline, &artifact).await.unwrap();
        tested.stage(pipeline, &artifact).await.unwrap()
    })
}

fn managers_and_security() -> ApprovalPolicy {
    ApprovalPolicy::new()
        .rule(
            Rule::new("release-managers")
                .group("release-managers")
                .need(2),
        )
        .unwrap()
        .rule(Rule::new("security").group("security"))
        .unwrap()
}

#[test]
fn every_rule_must_be_met_and_progress_says_what_is_missing() {
    let clock = clock();
    let pipeline = pipeline(&clock, managers_and_security(), org());
    let staged = staged(&pipeline, "aaa", None);
    let mut ballot = Ballot::new(staged.approval_request());

    let progress = pipeline
        .vote(&mut ballot, "rita", Decision::Approve, "notes ok")
        .unwrap();
    assert_eq!(
        progress.to_string(),
        "waiting for release-managers 1 of 2 (rita), security 0 of 1"
    );
    let refused = pipeline.issue(&ballot).unwrap_err();
    assert!(
        matches!(&refused, Error::Approval(ApprovalError::Incomplete { waiting_for, .. }) if waiting_for.contains("security 0 of 1")),
        "{refused:?}"
    );
    assert_eq!(refused.kind(), ErrorKind::Approval);

    let progress = pipeline
        .vote(&mut ballot, "omar", Decision::Approve, "scan clean")
        .unwrap();
    assert_eq!(
        progress.to_string(),
        "security 1 of 1 (omar), waiting for release-managers 1 of 2 (rita)"
    );
    let progress = pipeline
        .vote(&mut ballot, "sam", Decision::Approve, "go")
        .unwrap();
    assert!(progress.is_met(), "{progress}");

    let approval = pipeline.issue(&ballot).unwrap();
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    let record = approved.record().approval().unwrap();
    let signed: Vec<(&str, Vec<&str>)> = record
        .signoffs
        .iter()
        .map(|s| {
            (
                s.person.as_str(),
                s.rules.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        signed,
        [
            ("rita", vec!["release-managers"]),
            ("omar", vec!["security"]),
            ("sam", vec!["release-managers"]),
        ]
    );
    assert_eq!(record.approver, "sam");
}

#[test]
fn a_person_in_three_groups_counts_once_per_rule() {
    let clock = clock();
    let policy = ApprovalPolicy::new()
        .rule(
            Rule::new("anyone-senior")
                .group("release-managers")
                .group("security")
                .group("sre")
                .need(2),
        )
        .unwrap();
    let pipeline = pipeline(&clock, policy, org());
    let staged = staged(&pipeline, "aaa", None);
    let mut ballot = Ballot::new(staged.approval_request());
    pipeline
        .vote(&mut ballot, "ines", Decision::Approve, "one")
        .unwrap();
    let progress = pipeline
        .vote(&mut ballot, "ines", Decision::Approve, "again")
        .unwrap();
    assert_eq!(progress.rules[0].approved_by, ["ines"]);
    assert!(!progress.is_met());
    let progress = pipeline
        .vote(&mut ballot, "pat", Decision::Approve, "two")
        .unwrap();
    assert!(progress.is_met());
}

#[test]
fn people_outside_every_rule_cannot_vote() {
    let clock = clock();
    let pipeline = pipeline(&clock, managers_and_security(), org());
    let staged = staged(&pipeline, "aaa", None);
    let mut ballot = Ballot::new(staged.approval_request());
    let error = pipeline
        .vote(&mut ballot, "mallory", Decision::Approve, "trust me")
        .unwrap_err();
    assert!(
        matches!(error, Error::Approval(ApprovalError::NotAnApprover { .. })),
        "{error:?}"
    );
    assert!(ballot.votes().is_empty());
}

#[test]
fn author_and_triggerer_are_excluded_unless_relaxed_and_the_relaxation_is_recorded() {
    let clock = clock();
    let policy = || ApprovalPolicy::any_of([AUTHOR, "merge-bot", "rita"]).unwrap();
    let strict = pipeline(&clock, policy(), org());
    let staged_strict = staged(&strict, "aaa", Some("merge-bot"));
    let mut ballot = Ballot::new(staged_strict.approval_request());
    let author = strict
        .vote(&mut ballot, AUTHOR, Decision::Approve, "mine")
        .unwrap_err();
    assert!(
        matches!(author, Error::Approval(ApprovalError::SelfApproval { .. })),
        "{author:?}"
    );
    let trigger = strict
        .vote(&mut ballot, "merge-bot", Decision::Approve, "auto")
        .unwrap_err();
    assert!(
        matches!(
            trigger,
            Error::Approval(ApprovalError::TriggererApproval { .. })
        ),
        "{trigger:?}"
    );
    assert!(trigger.to_string().contains("merge-bot"), "{trigger}");

    let relaxed_policy = policy()
        .allow_self_approval(true)
        .allow_triggerer_approval(true);
    let relaxed = pipeline(&clock, relaxed_policy, org());
    let staged_relaxed = staged(&relaxed, "bbb", Some("merge-bot"));
    let mut ballot = Ballot::new(staged_relaxed.approval_request());
    relaxed
        .vote(&mut ballot, "merge-bot", Decision::Approve, "auto")
        .unwrap();
    let approval = relaxed.issue(&ballot).unwrap();
    let approved = block_on(staged_relaxed.approve(&relaxed, approval)).unwrap();
    let record = approved.record().approval().unwrap();
    assert!(record.triggerer_approved && !record.self_approved);
    assert!(record.signoffs[0].triggerer_approved);
}

#[test]
fn a_hand_edited_ballot_gains_nothing() {
    // A bot stores ballots as JSON; someone adds a vote by the author. Issuing re-checks it.
    let clock = clock();
    let pipeline = pipeline(
        &clock,
        ApprovalPolicy::any_of([AUTHOR, "rita"]).unwrap(),
        org(),
    );
    let staged = staged(&pipeline, "aaa", None);
    let mut value = serde_json::to_value(Ballot::new(staged.approval_request())).unwrap();
    value["votes"] = serde_json::json!([
        {"person": AUTHOR, "decision": "approve", "reason": "mine", "at": support::START},
        {"person": "mallory", "decision": "approve", "reason": "who?", "at": support::START},
    ]);
    let forged: Ballot = serde_json::from_value(value).unwrap();
    let error = pipeline.issue(&forged).unwrap_err();
    assert!(
        matches!(error, Error::Approval(ApprovalError::Incomplete { .. })),
        "{error:?}"
    );
}

#[test]
fn a_forged_vote_by_the_triggerer_is_not_counted_under_a_strict_policy() {
    // The triggerer is named by the policy, so only the separation-of-duties rule keeps
    // their vote out: a ballot edited to carry it must still yield nothing.
    let clock = clock();
    let pipeline = pipeline(
        &clock,
        ApprovalPolicy::any_of(["merge-bot", "rita"]).unwrap(),
        org(),
    );
    let staged = staged(&pipeline, "aaa", Some("merge-bot"));
    let mut value = serde_json::to_value(Ballot::new(staged.approval_request())).unwrap();
    value["votes"] = serde_json::json!([
        {"person": "merge-bot", "decision": "approve", "reason": "auto", "at": support::START},
    ]);
    let forged: Ballot = serde_json::from_value(value).unwrap();
    assert_eq!(forged.votes().len(), 1);
    let progress = pipeline.progress(&forged);
    assert!(progress.rules[0].approved_by.is_empty(), "{progress}");
    let error = pipeline.issue(&forged).unwrap_err();
    assert!(
        matches!(error, Error::Approval(ApprovalError::Incomplete { .. })),
        "{error:?}"
    );
}

#[test]
fn a_group_rule_admits_nobody_when_the_pipeline_has_no_directory() {
    let clock = clock();
    let policy = ApprovalPolicy::new()
        .rule(Rule::new("release-managers").group("release-managers"))
        .unwrap();
    // No `.directory(..)`: groups resolve through `NoGroups`.
    let pipeline = Pipeline::<Delivery>::builder("shop")
        .clock(clock.clone())
        .stages(standard_stages())
        .approvals(policy)
        .build()
        .unwrap();
    let staged = staged(&pipeline, "aaa", None);
    let mut ballot = Ballot::new(staged.approval_request());
    let error = pipeline
        .vote(&mut ballot, "rita", Decision::Approve, "I manage releases")
        .unwrap_err();
    assert!(
        matches!(error, Error::Approval(ApprovalError::NotAnApprover { .. })),
        "{error:?}"
    );
    assert!(!NoGroups.is_member("rita", "release-managers"));
}

#[test]
fn a_policy_shows_its_rules_approvers_and_validity_and_names_nobody_else() {
    let policy = ApprovalPolicy::new()
        .rule(
            Rule::new("leads")
                .person("rita")
                .person("sam")
                .group("release-managers")
                .need(2),
        )
        .unwrap()
        .rule(Rule::new("security").group("security"))
        .unwrap()
        .valid_for(8 * HOUR);
    let rule = &policy.rules()[0];
    assert_eq!(rule.name(), "leads");
    assert_eq!(rule.needed(), 2);
    assert_eq!(
        rule.approvers(),
        [
            Approver::Person(Person::new("rita").unwrap()),
            Approver::Person(Person::new("sam").unwrap()),
            Approver::Group("release-managers".to_owned()),
        ]
    );
    // What a bot shows when it asks for votes.
    assert_eq!(rule.to_string(), "leads: 2 of rita, sam, @release-managers");
    assert_eq!(policy.rules()[1].to_string(), "security: 1 of @security");
    assert_eq!(policy.validity(), 8 * HOUR);
    let named: Vec<&str> = policy.approvers().map(Person::as_str).collect();
    assert_eq!(named, ["rita", "sam"]);
    assert!(policy.may_approve("sam"));
    assert!(!policy.may_approve("mallory"));
    // `may_approve` names people only: a group member is admitted through a directory.
    assert!(!policy.may_approve("omar"));
    assert!(policy.admits("omar", &org()));
    assert!(!policy.admits("mallory", &org()));
}

#[test]
fn a_ballot_keeps_every_vote_in_order() {
    let clock = clock();
    let pipeline = pipeline(&clock, managers_and_security(), org());
    let staged = staged(&pipeline, "aaa", None);
    let mut ballot = Ballot::new(staged.approval_request());
    pipeline
        .vote(&mut ballot, "rita", Decision::Reject, "not yet")
        .unwrap();
    clock.advance(HOUR);
    pipeline
        .vote(&mut ballot, "rita", Decision::Approve, "now")
        .unwrap();
    let votes: Vec<(&str, Decision, &str)> = ballot
        .votes()
        .iter()
        .map(|v| (v.person.as_str(), v.decision, v.reason.as_str()))
        .collect();
    assert_eq!(
        votes,
        [
            ("rita", Decision::Reject, "not yet"),
            ("rita", Decision::Approve, "now"),
        ]
    );
    assert_eq!(ballot.votes()[1].at, support::START.saturating_add(HOUR));
    assert_eq!(ballot.request(), &staged.approval_request());
}

#[test]
fn a_rejection_closes_until_its_author_changes_their_mind() {
    let clock = clock();
    let pipeline = pipeline(
        &clock,
        ApprovalPolicy::any_of(["rita", "sam"]).unwrap(),
        org(),
    );
    let staged = staged(&pipeline, "aaa", None);
    let mut ballot = Ballot::new(staged.approval_request());
    pipeline
        .vote(&mut ballot, "rita", Decision::Approve, "fine")
        .unwrap();
    let progress = pipeline
        .vote(
            &mut ballot,
            "sam",
            Decision::Reject,
            "the migration is not reversible",
        )
        .unwrap();
    assert!(!progress.is_met());
    assert_eq!(
        progress.to_string(),
        "rejected by sam: the migration is not reversible"
    );
    let error = pipeline.issue(&ballot).unwrap_err();
    assert!(
        matches!(&error, Error::Approval(ApprovalError::Rejected { person, reason }) if person == "sam" && reason.contains("reversible")),
        "{error:?}"
    );
    pipeline
        .vote(&mut ballot, "sam", Decision::Approve, "fixed in 4f2a9c2")
        .unwrap();
    assert!(pipeline.issue(&ballot).is_ok());
}

#[test]
fn votes_expire_and_the_approval_lasts_as_long_as_its_earliest_vote() {
    let clock = clock();
    let policy = ApprovalPolicy::new()
        .rule(Rule::new("two").person("rita").person("sam").need(2))
        .unwrap()
        .valid_for(2 * HOUR);
    let pipeline = pipeline(&clock, policy, org());
    let staged = staged(&pipeline, "aaa", None);
    let mut ballot = Ballot::new(staged.approval_request());
    let first = clock_now(&clock);
    pipeline
        .vote(&mut ballot, "rita", Decision::Approve, "ok")
        .unwrap();
    clock.advance(2 * HOUR);
    let progress = pipeline
        .vote(&mut ballot, "sam", Decision::Approve, "ok")
        .unwrap();
    assert!(!progress.is_met());
    assert_eq!(progress.expired, ["rita"]);
    assert!(
        progress.to_string().ends_with("(expired: rita)"),
        "{progress}"
    );
    clock.advance(HOUR);
    pipeline
        .vote(&mut ballot, "rita", Decision::Approve, "still ok")
        .unwrap();
    let approval = pipeline.issue(&ballot).unwrap();
    // sam voted at first + 2h, so the approval ends at first + 4h.
    assert_eq!(approval.record().expires_at, first.saturating_add(4 * HOUR));
    let _ = first;
}

fn clock_now(clock: &ManualClock) -> tollgate::time::Timestamp {
    use tollgate::time::Clock;
    clock.now()
}

#[test]
fn leaving_a_group_withdraws_the_vote() {
    let clock = clock();
    let directory = Shared::new(org());
    let policy = ApprovalPolicy::new()
        .rule(Rule::new("security").group("security"))
        .unwrap();
    let pipeline = pipeline(&clock, policy, directory.clone());
    let staged = staged(&pipeline, "aaa", None);
    let mut ballot = Ballot::new(staged.approval_request());
    assert!(
        pipeline
            .vote(&mut ballot, "omar", Decision::Approve, "ok")
            .unwrap()
            .is_met()
    );
    directory.remove("security", "omar");
    assert!(!pipeline.progress(&ballot).is_met());
    assert!(pipeline.issue(&ballot).is_err());
}

#[test]
fn policies_can_differ_per_environment() {
    let clock = clock();
    let pipeline = Pipeline::<Delivery>::builder("shop")
        .clock(clock.clone())
        .stages(standard_stages())
        .approvals(ApprovalPolicy::any_of(["rita"]).unwrap())
        .approvals_for("production", managers_and_security())
        .unwrap()
        .directory(org())
        .build()
        .unwrap();
    let staged = staged(&pipeline, "aaa", None);
    // The production policy applies, so rita alone is not enough.
    let error = pipeline
        .sign_off(&staged.approval_request(), "rita", "ok")
        .unwrap_err();
    assert!(
        matches!(error, Error::Approval(ApprovalError::Incomplete { .. })),
        "{error:?}"
    );
    assert_eq!(pipeline.approval_policy().rules().len(), 2);
}

#[test]
fn a_policy_without_rules_and_a_ballot_for_an_unguarded_environment_are_never_met() {
    let clock = clock();
    let pipeline = pipeline(&clock, ApprovalPolicy::new(), org());
    let staged = staged(&pipeline, "aaa", None);
    let ballot = Ballot::new(staged.approval_request());
    let progress = pipeline.progress(&ballot);
    assert!(!progress.is_met(), "{progress}");
    assert_eq!(progress.to_string(), "the policy has no rules");
    assert!(matches!(
        pipeline.issue(&ballot),
        Err(Error::Approval(ApprovalError::Incomplete { .. }))
    ));
}

#[test]
fn a_policy_that_cannot_be_met_is_refused() {
    let cases = [
        (Rule::new("none").need(1), "names no people or groups"),
        (Rule::new("zero").person("rita").need(0), "at least one"),
        (
            Rule::new("three").person("rita").person("sam").need(3),
            "only 2 people",
        ),
        (Rule::new("bad").person(" "), "invalid"),
    ];
    for (rule, needle) in cases {
        let error = ApprovalPolicy::new().rule(rule).unwrap_err();
        assert!(
            matches!(error, ApprovalError::InvalidRule { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(needle),
            "{error} should say {needle:?}"
        );
    }
    let json = serde_json::json!({
        "rules": [{"name": "zero", "approvers": [{"person": "rita"}], "need": 0}],
        "valid_for": 3_600_000
    });
    let error = serde_json::from_value::<ApprovalPolicy>(json).unwrap_err();
    assert!(error.to_string().contains("at least one"), "{error}");
    let policy = managers_and_security();
    let back: ApprovalPolicy =
        serde_json::from_str(&serde_json::to_string(&policy).unwrap()).unwrap();
    assert_eq!(back, policy);
}

// ---- property test against a brute-force reference ----

/// People and groups of the generated worlds.
const PEOPLE: [&str; 6] = ["ann", "bob", "cat", "dan", "eve", "fay"];
const GROUPS: [&str; 3] = ["g0", "g1", "g2"];

#[derive(Debug, Clone)]
enum Step {
    Approve(usize),
    Reject(usize),
    /// Advance the clock by this many minutes.
    Wait(u64),
    Leave(usize, usize),
    Join(usize, usize),
}

#[derive(Debug, Clone)]
struct World {
    /// Per rule: people named, groups named, need.
    rules: Vec<(Vec<usize>, Vec<usize>, usize)>,
    members: BTreeSet<(usize, usize)>,
    author: usize,
    validity_minutes: u64,
    steps: Vec<Step>,
}

fn world() -> impl Strategy<Value = World> {
    let rule = (
        prop::collection::vec(0..PEOPLE.len(), 0..3),
        prop::collection::vec(0..GROUPS.len(), 0..2),
        1usize..3,
    )
        .prop_filter(
            "a rule names someone and can be met",
            |(people, groups, need)| {
                !(people.is_empty() && groups.is_empty())
                    && (!groups.is_empty() || people.iter().collect::<BTreeSet<_>>().len() >= *need)
            },
        )
        .prop_map(|(mut people, groups, need)| {
            people.sort_unstable();
            people.dedup();
            (people, groups, need)
        });
    let step = prop_oneof![
        4 => (0..PEOPLE.len()).prop_map(Step::Approve),
        1 => (0..PEOPLE.len()).prop_map(Step::Reject),
        2 => (1u64..90).prop_map(Step::Wait),
        1 => (0..PEOPLE.len(), 0..GROUPS.len()).prop_map(|(p, g)| Step::Leave(p, g)),
        1 => (0..PEOPLE.len(), 0..GROUPS.len()).prop_map(|(p, g)| Step::Join(p, g)),
    ];
    (
        prop::collection::vec(rule, 1..4),
        prop::collection::btree_set((0..PEOPLE.len(), 0..GROUPS.len()), 0..10),
        0..PEOPLE.len(),
        30u64..240,
        prop::collection::vec(step, 0..20),
    )
        .prop_map(|(rules, members, author, validity_minutes, steps)| World {
            rules,
            members,
            author,
            validity_minutes,
            steps,
        })
}

/// The reference: who voted what when, evaluated with nothing but the definitions.
fn reference_met(
    world: &World,
    members: &BTreeSet<(usize, usize)>,
    votes: &BTreeMap<usize, (bool, u64)>,
    now: u64,
) -> bool {
    let admitted = |person: usize, rule: &(Vec<usize>, Vec<usize>, usize)| {
        rule.0.contains(&person) || rule.1.iter().any(|&g| members.contains(&(person, g)))
    };
    let counts = |person: usize| {
        person != world.author
            && world.rules.iter().any(|r| admitted(person, r))
            && votes
                .get(&person)
                .is_some_and(|&(_, at)| now < at + world.validity_minutes)
    };
    let rejected = (0..PEOPLE.len()).any(|p| counts(p) && !votes[&p].0);
    !rejected
        && world.rules.iter().all(|rule| {
            (0..PEOPLE.len())
                .filter(|&p| counts(p) && votes[&p].0 && admitted(p, rule))
                .count()
                >= rule.2
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_policy_opens_exactly_when_the_reference_says(world in world()) {
        let clock = clock();
        let mut policy = ApprovalPolicy::new().valid_for(Duration::from_secs(world.validity_minutes * 60));
        for (i, (people, groups, need)) in world.rules.iter().enumerate() {
            let mut rule = Rule::new(format!("rule-{i}")).need(*need);
            for &p in people {
                rule = rule.person(PEOPLE[p]);
            }
            for &g in groups {
                rule = rule.group(GROUPS[g]);
            }
            policy = policy.rule(rule).unwrap();
        }
        let directory = Shared::new(Groups::new());
        let mut members = world.members.clone();
        let sync = |members: &BTreeSet<(usize, usize)>| {
            let mut groups = Groups::new();
            for &(p, g) in members {
                groups = groups.group(GROUPS[g], [PEOPLE[p]]).unwrap();
            }
            *directory.0.lock().unwrap() = groups;
        };
        sync(&members);
        let author = PEOPLE[world.author];
        let pipeline = Pipeline::<Delivery>::builder("shop")
            .clock(clock.clone())
            .stages(standard_stages())
            .approvals(policy)
            .directory(directory.clone())
            .build()
            .unwrap();
        let revision = Revision::new("abc", author).unwrap();
        let staged = block_on(async {
            let built = pipeline.start("r1", revision).unwrap().build(&pipeline).await.unwrap();
            let artifact = built.artifact().clone();
            let tested = built.test(&pipeline, &artifact).await.unwrap();
            tested.stage(&pipeline, &artifact).await.unwrap()
        });
        let mut ballot = Ballot::new(staged.approval_request());
        let mut votes: BTreeMap<usize, (bool, u64)> = BTreeMap::new();
        let mut minutes = 0u64;
        for step in &world.steps {
            match *step {
                Step::Approve(p) | Step::Reject(p) => {
                    let yes = matches!(step, Step::Approve(_));
                    let decision = if yes { Decision::Approve } else { Decision::Reject };
                    if pipeline.vote(&mut ballot, PEOPLE[p], decision, "because").is_ok() {
                        votes.insert(p, (yes, minutes));
                    }
                }
                Step::Wait(m) => {
                    minutes += m;
                    clock.advance(Duration::from_secs(m * 60));
                }
                Step::Leave(p, g) => {
                    members.remove(&(p, g));
                    sync(&members);
                }
                Step::Join(p, g) => {
                    members.insert((p, g));
                    sync(&members);
                }
            }
            let expected = reference_met(&world, &members, &votes, minutes);
            let progress: Progress = pipeline.progress(&ballot);
            prop_assert_eq!(progress.is_met(), expected, "after {:?}: {}", step, progress);
            prop_assert_eq!(pipeline.issue(&ballot).is_ok(), expected);
        }
    }
}

#[test]
fn the_release_is_approved_only_through_the_policy() {
    let clock = clock();
    let pipeline = pipeline(&clock, managers_and_security(), org());
    let staged = staged(&pipeline, "aaa", None);
    let mut ballot = Ballot::new(staged.approval_request());
    for person in ["rita", "sam", "omar"] {
        // Until the last vote, some rule is unmet and no approval is issued.
        assert!(matches!(
            pipeline.issue(&ballot),
            Err(Error::Approval(ApprovalError::Incomplete { .. }))
        ));
        pipeline
            .vote(&mut ballot, person, Decision::Approve, "ok")
            .unwrap();
    }
    let approved = block_on(staged.approve(&pipeline, pipeline.issue(&ballot).unwrap())).unwrap();
    assert_eq!(approved.state(), StateName::Approved);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// An approval issued for a request that differs from the release in any bound field
    /// (release, revision, author, digest, environment) never approves it, and the refused
    /// release can still be approved properly.
    #[test]
    fn an_approval_for_anything_else_never_approves(
        field in 0usize..5,
        other in "[a-z][a-z0-9]{2,8}",
    ) {
        let clock = clock();
        let pipeline = pipeline(&clock, ApprovalPolicy::any_of(["rita"]).unwrap(), org());
        let staged = staged(&pipeline, "aaa", None);
        let mut request = staged.approval_request();
        match field {
            0 => request.release = tollgate::id::ReleaseId::new(format!("r-{other}")).unwrap(),
            1 => request.revision = format!("rev-{other}"),
            2 => request.author = Person::new(format!("dev-{other}")).unwrap(),
            3 => request.digest = Digest::sha256(other.as_bytes()),
            _ => request.environment = tollgate::environment::EnvironmentName::new(format!("env-{other}")).unwrap(),
        }
        let mut ballot = Ballot::new(request);
        pipeline.vote(&mut ballot, "rita", Decision::Approve, "ok").unwrap();
        // A request for another environment falls back to the default policy here.
        let approval = pipeline.issue(&ballot).unwrap();
        let refused = block_on(staged.approve(&pipeline, approval)).unwrap_err();
        prop_assert!(
            matches!(refused.error(), Error::Approval(ApprovalError::Mismatch { .. })),
            "{:?}",
            refused.error()
        );
        let staged = refused.into_release();
        prop_assert_eq!(staged.state(), StateName::Staged);
        let approval = pipeline.sign_off(&staged.approval_request(), "rita", "ok").unwrap();
        prop_assert!(block_on(staged.approve(&pipeline, approval)).is_ok());
    }
}
