//! People are compared as the pipeline's directory names them: with a directory that folds
//! case (GitHub logins, e-mail), the author cannot approve under another spelling, the
//! triggerer neither, and one person counts once however they spell their name.

mod support;

use support::{block_on, clock, delivery_with, revision, staged, standard_stages};
use tollgate::approval::{ApprovalError, ApprovalPolicy, Decision, Directory, Groups, Rule};
use tollgate::prelude::*;

/// A directory of case-insensitive logins over a fixed table of groups.
struct Logins(Groups);

impl Directory for Logins {
    fn is_member(&self, person: &str, group: &str) -> bool {
        self.0.is_member(&person.to_lowercase(), group)
    }

    fn canonical(&self, person: &str) -> String {
        person.to_lowercase()
    }
}

fn pipeline(policy: ApprovalPolicy) -> Pipeline<Delivery> {
    let groups = Groups::new()
        .group("release-managers", ["rita", "ines", "dana", "sam"])
        .unwrap();
    delivery_with("shop", &clock(), policy)
        .stages(standard_stages())
        .directory(Logins(groups))
        .build()
        .unwrap()
}

fn managers(need: usize) -> ApprovalPolicy {
    ApprovalPolicy::new()
        .rule(
            Rule::new("release-managers")
                .group("release-managers")
                .need(need),
        )
        .unwrap()
}

#[test]
fn the_author_cannot_approve_under_another_spelling_of_their_login() {
    let pipeline = pipeline(managers(1));
    let (_staged, _) = staged(&pipeline, "r1", "aaa"); // authored by `dana`
    for spelling in ["dana", "Dana", "DANA"] {
        let refused = block_on(pipeline.vote("r1", spelling, Decision::Approve, "mine"))
            .expect_err("the author may not approve");
        assert!(
            matches!(
                &refused,
                Error::Approval(ApprovalError::SelfApproval { .. })
            ),
            "{spelling}: {refused}"
        );
    }
    assert!(block_on(pipeline.ballot("r1")).unwrap().votes().is_empty());
}

#[test]
fn the_triggerer_cannot_approve_under_another_spelling_of_their_login() {
    let pipeline = pipeline(managers(1));
    let rev = revision("aaa").triggered_by(tollgate::id::Person::new("sam").unwrap());
    let built = block_on(pipeline.start("r1", rev).unwrap().build(&pipeline)).unwrap();
    let artifact = built.artifact().clone();
    let tested = block_on(built.test(&pipeline, &artifact)).unwrap();
    let _staged = block_on(tested.stage(&pipeline, &artifact)).unwrap();
    let refused = block_on(pipeline.vote("r1", "SAM", Decision::Approve, "merged it"))
        .expect_err("the triggerer may not approve");
    assert!(
        matches!(
            &refused,
            Error::Approval(ApprovalError::TriggererApproval { .. })
        ),
        "{refused}"
    );
}

#[test]
fn one_person_counts_once_however_they_spell_their_name() {
    let pipeline = pipeline(managers(2));
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    block_on(pipeline.vote("r1", "ines", Decision::Approve, "ok")).unwrap();
    let progress = block_on(pipeline.vote("r1", "INES", Decision::Approve, "ok again")).unwrap();
    assert!(!progress.is_met(), "{progress}");
    let refused = block_on(pipeline.issue("r1")).expect_err("one person is not two");
    assert!(
        matches!(&refused, Error::Approval(ApprovalError::Incomplete { .. })),
        "{refused}"
    );
    block_on(pipeline.vote("r1", "Rita", Decision::Approve, "ok")).unwrap();
    let approval = block_on(pipeline.issue("r1")).unwrap();
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    let signoffs: Vec<&str> = approved
        .record()
        .approval()
        .unwrap()
        .signoffs
        .iter()
        .map(|s| s.person.as_str())
        .collect();
    assert_eq!(
        signoffs,
        ["ines", "rita"],
        "votes are recorded under the directory's one name"
    );
}

#[test]
fn a_person_named_in_a_rule_is_admitted_under_any_spelling_the_directory_folds() {
    let pipeline = pipeline(ApprovalPolicy::any_of(["Omar"]).unwrap());
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = block_on(pipeline.sign_off("r1", "omar", "scanned")).unwrap();
    assert!(block_on(staged.approve(&pipeline, approval)).is_ok());
}

/// Drives release `id` of `rev` to Staged on `pipeline`.
fn stage(pipeline: &Pipeline<Delivery>, id: &str, rev: Revision) {
    let built = block_on(pipeline.start(id, rev).unwrap().build(pipeline)).unwrap();
    let artifact = built.artifact().clone();
    let tested = block_on(built.test(pipeline, &artifact)).unwrap();
    block_on(tested.stage(pipeline, &artifact)).unwrap();
}

#[test]
fn an_author_or_triggerer_recorded_under_another_spelling_cannot_approve_under_the_directorys() {
    // The revision names them as the forge wrote it (`Dana`, `Sam`); the vote is recorded
    // under the directory's one name (`dana`, `sam`). They are still the same people.
    let pipeline = pipeline(managers(1));
    stage(&pipeline, "r1", Revision::new("aaa", "Dana").unwrap());
    let refused = block_on(pipeline.vote("r1", "dana", Decision::Approve, "mine"))
        .expect_err("the author may not approve");
    assert!(
        matches!(
            &refused,
            Error::Approval(ApprovalError::SelfApproval { .. })
        ),
        "{refused}"
    );
    let rev = Revision::new("bbb", "rita")
        .unwrap()
        .triggered_by(tollgate::id::Person::new("Sam").unwrap());
    stage(&pipeline, "r2", rev);
    let refused = block_on(pipeline.vote("r2", "sam", Decision::Approve, "merged it"))
        .expect_err("the triggerer may not approve");
    assert!(
        matches!(
            &refused,
            Error::Approval(ApprovalError::TriggererApproval { .. })
        ),
        "{refused}"
    );
    for id in ["r1", "r2"] {
        assert!(block_on(pipeline.ballot(id)).unwrap().votes().is_empty());
    }
}
