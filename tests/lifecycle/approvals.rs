//! Approvals: bound to one pipeline (its name and its definition), release, artifact and
//! environment, valid until they expire (at approve and again at deploy), given only by the
//! people the policy names (never the author, unless the policy says so) and still admitted
//! when used, following from the votes the pipeline's journal holds and withdrawn by a later
//! rejection. A refused approval hands the release back, still approvable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{
    APPROVERS, AUTHOR, START, block_on, clock, delivery, delivery_pipeline, delivery_pipeline_with,
    delivery_with, policy, staged, standard_delivery, standard_stages,
};
use crate::{HOUR, SharedJournal, approve_properly};
use tollgate::approval::{ApprovalError, Decision, Directory, Groups, Rule};
use tollgate::fact::FactError;
use tollgate::graph::Step;
use tollgate::id::Person;
use tollgate::journal::JournalError;
use tollgate::prelude::*;
use tollgate::release::{MoveError, StateName};
use tollgate::time::{Clock, ManualClock};

/// Checks that a refused approval handed the release back Staged, unapproved, and that it
/// can still be approved properly.
fn still_staged_and_approvable(
    refused: MoveError<Staged, Delivery>,
    pipeline: &Pipeline<Delivery>,
) {
    let release = refused.into_release();
    assert_eq!(release.state(), StateName::Staged);
    assert_eq!(release.record().state(), StateName::Staged);
    assert!(release.record().approval().is_none());
    let approved = approve_properly(release, pipeline);
    assert_eq!(approved.state(), StateName::Approved);
}

/// `person`'s yes to release `release`, with `reason`, and the approval it issues.
fn sign_off<M: tollgate::lifecycle::HumanApproval>(
    pipeline: &Pipeline<M>,
    release: &str,
    person: &str,
    reason: &str,
) -> tollgate::Result<Approval> {
    block_on(pipeline.sign_off(release, person, reason))
}

// ---- approvals ----

fn assert_mismatch(error: &Error, expected_field: &str) {
    match error {
        Error::Approval(ApprovalError::Mismatch { field, .. }) => {
            assert_eq!(*field, expected_field, "{error}");
        }
        other => panic!("expected ApprovalError::Mismatch on {expected_field}, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Approval);
}

#[test]
fn an_approval_for_another_release_is_refused() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    // Same revision, so the same artifact: only the release differs.
    let (_a, _) = staged(&pipeline, "r1", "aaa");
    let (b, _) = staged(&pipeline, "r2", "aaa");
    let for_a = sign_off(&pipeline, "r1", "rita", "r1 looks good").unwrap();
    let refused = block_on(b.approve(&pipeline, for_a)).unwrap_err();
    assert_mismatch(refused.error(), "release");
    assert_eq!(
        refused.to_string(),
        "approval by `rita` is for release `r1`, not `r2`"
    );
    still_staged_and_approvable(refused, &pipeline);
}

/// A build stage that builds `flavour` and the revision into the artifact, and names itself
/// `compile` whatever it builds: two of them are the same executor to a pipeline's
/// fingerprint.
struct Compile(&'static str);

#[async_trait::async_trait]
impl Executor for Compile {
    async fn run(
        &self,
        ctx: tollgate::executor::StageContext<'_>,
    ) -> Result<StageOutcome, tollgate::executor::ExecutorError> {
        let bytes = format!("{} built from {}", self.0, ctx.revision());
        Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", bytes.as_bytes())))
    }

    fn name(&self) -> std::borrow::Cow<'_, str> {
        "compile".into()
    }
}

/// The standard delivery pipeline `shop` on `clock` with a `compile` stage that builds
/// `flavour`: pipelines of two flavours have the same definition (the same stages, and
/// executors of the same names), each with a journal of its own, like two bots deployed from
/// the same configuration whose builds are not reproducible.
fn flavoured(clock: &ManualClock, flavour: &'static str) -> Pipeline<Delivery> {
    let mut stages = standard_stages();
    stages[0] = Stage::build("compile").run(Compile(flavour));
    delivery("shop", clock).stages(stages).build().unwrap()
}

#[test]
fn an_approval_for_another_artifact_is_refused() {
    // The same release id cannot be started twice in one pipeline any more (see
    // `a_reused_release_id_is_refused_and_the_first_release_is_untouched`), so the other
    // artifact of release `r1` comes from a twin pipeline: same name, same definition, same
    // revision, its own journal, other bytes built. Only the artifact differs.
    let clock = clock();
    let pipeline = flavoured(&clock, "app");
    let twin = flavoured(&clock, "app, rebuilt,");
    assert_eq!(pipeline.fingerprint(), twin.fingerprint());
    let (_first, first_artifact) = staged(&pipeline, "r1", "aaa");
    let (second, second_artifact) = staged(&twin, "r1", "aaa");
    assert_ne!(first_artifact.digest, second_artifact.digest);
    let for_first = sign_off(&pipeline, "r1", "rita", "aaa is fine").unwrap();
    let refused = block_on(second.approve(&twin, for_first)).unwrap_err();
    assert_mismatch(refused.error(), "artifact");
    let message = refused.to_string();
    assert!(
        message.contains(&first_artifact.digest.to_string()),
        "{message}"
    );
    assert!(
        message.contains(&second_artifact.digest.to_string()),
        "{message}"
    );
    still_staged_and_approvable(refused, &twin);
}

#[test]
fn a_reused_release_id_is_refused_and_the_first_release_is_untouched() {
    // What was `an_approval_for_another_artifact_is_refused` with the id `r1` started twice:
    // the second start's first move is refused, so there is never a second artifact of `r1`
    // to approve, and the approval of `r1` is for the first one's artifact.
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (first, first_artifact) = staged(&pipeline, "r1", "aaa");
    let before = first.record().clone();
    let facts = pipeline_len(&pipeline);

    let second = pipeline
        .start("r1", crate::support::revision("bbb"))
        .unwrap();
    let refused = block_on(second.build(&pipeline)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{:?}", refused.error());
    assert!(
        matches!(
            refused.error(),
            Error::Journal(JournalError::Conflict { key, expected: 0, .. }) if key == "r1"
        ),
        "{:?}",
        refused.error()
    );
    let second = refused.into_release();
    assert_eq!(second.state(), StateName::Commit);
    assert!(second.record().steps().is_empty(), "nothing was built");
    assert!(second.record().artifact().is_none());
    // Nor does a retry get through.
    let refused = block_on(second.build(&pipeline)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict);

    assert_eq!(
        pipeline_len(&pipeline),
        facts,
        "nothing was written for `r1` again"
    );
    let restored = block_on(pipeline.restore("r1")).unwrap();
    assert_eq!(restored.record(), &before);
    let approval = sign_off(&pipeline, "r1", "rita", "aaa is fine").unwrap();
    assert_eq!(approval.request().digest, first_artifact.digest);
    assert_eq!(approval.request().revision, "aaa");
    let approved = block_on(first.approve(&pipeline, approval)).unwrap();
    let live = block_on(approved.deploy(&pipeline, &first_artifact)).unwrap();
    assert_eq!(live.artifact(), &first_artifact);
}

/// The number of facts in `pipeline`'s journal.
fn pipeline_len<M: tollgate::release::Mode>(pipeline: &Pipeline<M>) -> u64 {
    block_on(pipeline.journal().head()).unwrap().0
}

#[test]
fn an_approval_from_another_pipeline_is_refused() {
    let clock = clock();
    let journal = SharedJournal::new();
    let shop = standard_delivery(&clock)
        .journal(journal.clone())
        .build()
        .unwrap();
    let blog = delivery("blog", &clock)
        .stages(standard_stages())
        .build()
        .unwrap();
    let (in_shop, _) = staged(&shop, "r1", "aaa");
    let (in_blog, _) = staged(&blog, "r1", "aaa");

    // The blog pipeline asked to issue an approval for the shop's release: refused when
    // issued. A request can no longer be handed in; the blog pipeline reads the release's
    // facts, even from the journal the shop writes, and they name another pipeline.
    let snooping = delivery("blog", &clock)
        .stages(standard_stages())
        .journal(journal.clone())
        .build()
        .unwrap();
    let error = sign_off(&snooping, "r1", "rita", "wrong pipeline").unwrap_err();
    match &error {
        Error::Fact(FactError::ForeignPipeline {
            release,
            expected,
            found,
            differences,
        }) => {
            assert_eq!(release, "r1");
            assert_eq!(expected, "shop");
            assert_eq!(found, "blog");
            assert_eq!(differences, &["name"]);
        }
        other => panic!("expected FactError::ForeignPipeline, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Release);
    assert!(block_on(shop.ballot("r1")).unwrap().votes().is_empty());

    // Issued for the blog's release, used on the shop's release through the shop pipeline.
    let for_blog = sign_off(&blog, "r1", "rita", "blog ok").unwrap();
    let refused = block_on(in_shop.approve(&shop, for_blog)).unwrap_err();
    assert_mismatch(refused.error(), "pipeline");
    still_staged_and_approvable(refused, &shop);

    // Handing the blog's release to the shop pipeline is refused before the approval is read.
    let for_blog = sign_off(&blog, "r1", "rita", "blog ok").unwrap();
    let refused = block_on(in_blog.approve(&shop, for_blog)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::PipelineMismatch { expected, found, .. } if expected == "blog" && found == "shop"),
        "{:?}",
        refused.error()
    );
    assert_eq!(refused.kind(), ErrorKind::Release);
    still_staged_and_approvable(refused, &blog);
}

#[test]
fn an_approval_from_a_pipeline_merely_named_like_this_one_is_refused() {
    // A second pipeline called `shop` with a lax policy (mallory may approve) and its own
    // journal: every field of its approval's request matches the strict pipeline's release
    // (same name, id, revision, author, artifact, environment); only the definition that
    // issued it differs, and the approval says so.
    let clock = clock();
    let strict = delivery_pipeline(&clock);
    let lax = delivery_pipeline_with(&clock, ApprovalPolicy::any_of(["mallory"]).unwrap());
    assert_eq!(strict.name(), lax.name());
    assert_ne!(strict.fingerprint(), lax.fingerprint());
    let (in_strict, _) = staged(&strict, "r1", "aaa");
    let (_in_lax, _) = staged(&lax, "r1", "aaa");
    let from_lax = sign_off(&lax, "r1", "mallory", "trust me").unwrap();
    assert_eq!(from_lax.request(), &in_strict.approval_request());
    let refused = block_on(in_strict.approve(&strict, from_lax)).unwrap_err();
    assert_mismatch(refused.error(), "issuer");
    still_staged_and_approvable(refused, &strict);

    // Sharing the strict pipeline's journal does not help the lax one either: it may not
    // read, vote on or issue for a release of another definition.
    let journal = SharedJournal::new();
    let strict = standard_delivery(&clock)
        .journal(journal.clone())
        .build()
        .unwrap();
    let lax = delivery_with("shop", &clock, ApprovalPolicy::any_of(["mallory"]).unwrap())
        .stages(standard_stages())
        .journal(journal.clone())
        .build()
        .unwrap();
    let (_in_strict, _) = staged(&strict, "r2", "aaa");
    let error = block_on(lax.vote("r2", "mallory", Decision::Approve, "trust me")).unwrap_err();
    assert!(
        matches!(&error, Error::Fact(FactError::ForeignPipeline { differences, .. }) if differences == &["approval policies"]),
        "{error:?}"
    );
    assert!(block_on(lax.restore("r2")).is_err());
    assert!(block_on(strict.ballot("r2")).unwrap().votes().is_empty());
}

#[test]
fn an_approval_the_journals_votes_do_not_give_is_refused() {
    // A twin pipeline (same name and definition, same executors, its own journal) builds the
    // very same request; an approval issued from the first journal's votes does not follow
    // from the twin's.
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let twin = delivery_pipeline(&clock);
    let (_here, _) = staged(&pipeline, "r1", "aaa");
    let (there, _) = staged(&twin, "r1", "aaa");
    assert_eq!(
        sign_off(&pipeline, "r1", "rita", "ok").unwrap().request(),
        &there.approval_request()
    );

    // Nobody voted in the twin's journal.
    let from_elsewhere = sign_off(&pipeline, "r1", "rita", "ok").unwrap();
    let refused = block_on(there.approve(&twin, from_elsewhere)).unwrap_err();
    // The twin's journal gives no approval at all: what its policy still waits for.
    assert!(
        matches!(
            refused.error(),
            Error::Approval(ApprovalError::Incomplete { release, .. }) if release == "r1"
        ),
        "{:?}",
        refused.error()
    );
    assert_eq!(refused.kind(), ErrorKind::Approval);
    let there = refused.into_release();
    assert!(there.record().approval().is_none());

    // Someone else voted in the twin's journal: the approval names rita, the votes sam.
    block_on(twin.vote("r1", "sam", Decision::Approve, "ok")).unwrap();
    let from_elsewhere = sign_off(&pipeline, "r1", "rita", "ok").unwrap();
    let refused = block_on(there.approve(&twin, from_elsewhere)).unwrap_err();
    assert_mismatch(refused.error(), "approver");
    let there = refused.into_release();
    let own = block_on(twin.issue("r1")).unwrap();
    let approved = block_on(there.approve(&twin, own)).unwrap();
    assert_eq!(approved.record().approval().unwrap().approver, "sam");
}

#[test]
fn an_approval_for_another_environment_is_refused() {
    let clock = clock();
    let eu = standard_delivery(&clock)
        .production(Environment::new("prod-eu").unwrap())
        .build()
        .unwrap();
    let us = standard_delivery(&clock)
        .production(Environment::new("prod-us").unwrap())
        .build()
        .unwrap();
    let (in_eu, _) = staged(&eu, "r1", "aaa");
    let (in_us, _) = staged(&us, "r1", "aaa");
    assert_eq!(in_eu.approval_request().environment, "prod-eu");
    let for_eu = sign_off(&eu, "r1", "rita", "eu only").unwrap();
    let refused = block_on(in_us.approve(&us, for_eu)).unwrap_err();
    assert_mismatch(refused.error(), "environment");
    assert_eq!(
        refused.to_string(),
        "approval by `rita` is for environment `prod-eu`, not `prod-us`"
    );
    still_staged_and_approvable(refused, &us);
}

/// The standard delivery pipeline with approvals valid for an hour.
fn hour_long_delivery(clock: &ManualClock) -> Pipeline<Delivery> {
    delivery_pipeline_with(clock, policy().valid_for(HOUR))
}

#[test]
fn an_expired_approval_is_refused() {
    let clock = clock();
    let pipeline = hour_long_delivery(&clock);
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = sign_off(&pipeline, "r1", "rita", "ok").unwrap();
    clock.advance(HOUR + Duration::from_millis(1));
    let refused = block_on(staged.approve(&pipeline, approval)).unwrap_err();
    match refused.error() {
        Error::Approval(ApprovalError::Expired {
            approver,
            expired_at,
            now,
        }) => {
            assert_eq!(approver, "rita");
            assert_eq!(*expired_at, START.saturating_add(HOUR));
            assert_eq!(*now, clock.now());
        }
        other => panic!("expected ApprovalError::Expired, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::Approval);
    still_staged_and_approvable(refused, &pipeline);
}

#[test]
fn an_approval_is_expired_at_its_expiry_instant_and_valid_just_before() {
    let clock = clock();
    let pipeline = hour_long_delivery(&clock);

    let (at_deadline, _) = staged(&pipeline, "r1", "aaa");
    let approval = sign_off(&pipeline, "r1", "rita", "ok").unwrap();
    clock.advance(HOUR);
    let refused = block_on(at_deadline.approve(&pipeline, approval)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Approval(ApprovalError::Expired { expired_at, now, .. }) if expired_at == now),
        "{:?}",
        refused.error()
    );

    let (just_before, _) = staged(&pipeline, "r2", "aaa");
    let approval = sign_off(&pipeline, "r2", "rita", "ok").unwrap();
    clock.advance(HOUR.saturating_sub(Duration::from_millis(1)));
    let approved = block_on(just_before.approve(&pipeline, approval)).unwrap();
    assert_eq!(approved.state(), StateName::Approved);
}

#[test]
fn an_approval_that_expires_before_the_deploy_is_refused_at_deploy() {
    let clock = clock();
    let pipeline = hour_long_delivery(&clock);
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approval = sign_off(&pipeline, "r1", "rita", "ok").unwrap();
    clock.advance(HOUR / 2);
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();

    clock.advance(HOUR / 2);
    let refused = block_on(approved.deploy(&pipeline, &artifact)).unwrap_err();
    match refused.error() {
        Error::Approval(ApprovalError::Expired {
            approver,
            expired_at,
            now,
        }) => {
            assert_eq!(approver, "rita");
            assert_eq!(*expired_at, START.saturating_add(HOUR));
            assert_eq!(*now, START.saturating_add(HOUR));
        }
        other => panic!("expected ApprovalError::Expired, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::Approval);
    let approved = refused.into_release();
    assert_eq!(approved.state(), StateName::Approved);
    assert!(
        approved
            .record()
            .steps()
            .iter()
            .all(|s| s.step != Step::Deploy),
        "nothing was deployed on the expired approval"
    );
    // Restored from the journal, it is still the approved release, and still not deployable.
    drop(approved);
    let restored = block_on(pipeline.restore("r1")).unwrap();
    assert_eq!(restored.state(), StateName::Approved);
    let approved = Release::<Approved, Delivery>::try_from(restored).unwrap();
    let refused = block_on(approved.deploy(&pipeline, &artifact)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Approval);

    // Just before its expiry, the same approval deploys.
    let (staged, artifact) = crate::support::staged(&pipeline, "r2", "aaa");
    let approval = sign_off(&pipeline, "r2", "rita", "ok").unwrap();
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    clock.advance(HOUR.saturating_sub(Duration::from_millis(1)));
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    assert_eq!(live.state(), StateName::Deployed);
}

/// A directory the test can change while the pipeline holds it.
#[derive(Clone, Default)]
struct LiveGroups(Arc<Mutex<Groups>>);

impl Directory for LiveGroups {
    fn is_member(&self, person: &str, group: &str) -> bool {
        self.0.lock().unwrap().is_member(person, group)
    }
}

#[test]
fn an_approval_is_refused_once_someone_who_gave_it_has_left_the_group() {
    let clock = clock();
    let directory = LiveGroups::default();
    *directory.0.lock().unwrap() = Groups::new().group("release-managers", APPROVERS).unwrap();
    let pipeline = delivery_with_directory(&clock, directory.clone());
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = sign_off(&pipeline, "r1", "rita", "ok").unwrap();
    assert!(
        directory
            .0
            .lock()
            .unwrap()
            .remove("release-managers", "rita")
    );
    let refused = block_on(staged.approve(&pipeline, approval)).unwrap_err();
    match refused.error() {
        Error::Approval(ApprovalError::NotAnApprover { person, pipeline }) => {
            assert_eq!(person, "rita");
            assert_eq!(pipeline, "shop");
        }
        other => panic!("expected ApprovalError::NotAnApprover, got {other:?}"),
    }
    let staged = refused.into_release();
    assert!(staged.record().approval().is_none());
    // Someone still in the group approves it.
    let approval = sign_off(&pipeline, "r1", "sam", "ok").unwrap();
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    assert_eq!(approved.record().approval().unwrap().approver, "sam");
}

/// The standard delivery pipeline `shop` whose only rule is "one of the release managers",
/// with `directory` saying who they are.
fn delivery_with_directory(
    clock: &ManualClock,
    directory: impl Directory + 'static,
) -> Pipeline<Delivery> {
    let policy = ApprovalPolicy::new()
        .rule(Rule::new("release-managers").group("release-managers"))
        .unwrap();
    delivery_with("shop", clock, policy)
        .stages(standard_stages())
        .directory(directory)
        .build()
        .unwrap()
}

#[test]
fn a_rejection_after_the_approval_was_issued_withdraws_it() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = sign_off(&pipeline, "r1", "rita", "ok").unwrap();
    block_on(pipeline.vote(
        "r1",
        "sam",
        Decision::Reject,
        "the migration is not reversible",
    ))
    .unwrap();
    let refused = block_on(staged.approve(&pipeline, approval)).unwrap_err();
    match refused.error() {
        Error::Approval(ApprovalError::Rejected { person, reason }) => {
            assert_eq!(person, "sam");
            assert_eq!(reason, "the migration is not reversible");
        }
        other => panic!("expected ApprovalError::Rejected, got {other:?}"),
    }
    assert_eq!(refused.kind(), ErrorKind::Approval);
    let staged = refused.into_release();
    assert!(staged.record().approval().is_none());
    // While sam rejects, nothing is issued; once sam approves, an approval is.
    assert!(block_on(pipeline.issue("r1")).is_err());
    block_on(pipeline.vote("r1", "sam", Decision::Approve, "made reversible")).unwrap();
    let approval = block_on(pipeline.issue("r1")).unwrap();
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    assert_eq!(approved.state(), StateName::Approved);
}

#[test]
fn an_author_may_not_approve_their_own_change() {
    let clock = clock();
    let pipeline =
        delivery_pipeline_with(&clock, ApprovalPolicy::any_of(["rita", AUTHOR]).unwrap());
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let error = sign_off(&pipeline, "r1", AUTHOR, "my own change").unwrap_err();
    match &error {
        Error::Approval(ApprovalError::SelfApproval { person, revision }) => {
            assert_eq!(person, AUTHOR);
            assert_eq!(revision, "aaa");
        }
        other => panic!("expected ApprovalError::SelfApproval, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Approval);
    assert_eq!(
        approve_properly(staged, &pipeline).state(),
        StateName::Approved
    );
}

#[test]
fn self_approval_allowed_by_the_policy_is_recorded_as_such() {
    let clock = clock();
    let pipeline = delivery_pipeline_with(
        &clock,
        ApprovalPolicy::any_of([AUTHOR])
            .unwrap()
            .allow_self_approval(true),
    );
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let approval = sign_off(&pipeline, "r1", AUTHOR, "hotfix, on call alone").unwrap();
    assert!(approval.record().self_approved);
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    let record = approved.record().approval().unwrap();
    assert_eq!(record.approver, AUTHOR);
    assert!(record.self_approved);
}

#[test]
fn the_authors_vote_is_refused_whatever_a_copy_of_the_request_says() {
    // Was `editing_the_request_author_does_not_bypass_the_self_approval_rule`, when a bot
    // handed `sign_off` a request (plain data with public fields). A vote now names only the
    // release; the pipeline derives the request from the release's facts, so an edited copy
    // of the request has nowhere to go, and the author is still refused.
    let clock = clock();
    let pipeline =
        delivery_pipeline_with(&clock, ApprovalPolicy::any_of(["rita", AUTHOR]).unwrap());
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let mut request = staged.approval_request();
    request.author = Person::new("someone-else").unwrap();

    let refusal = match sign_off(&pipeline, staged.id().as_str(), AUTHOR, "my own change") {
        Err(error) => error,
        Ok(approval) => match block_on(staged.approve(&pipeline, approval)) {
            Err(refused) => refused.into_parts().1,
            Ok(approved) => panic!(
                "the author approved their own change; recorded as {:?}",
                approved.record().approval()
            ),
        },
    };
    assert!(
        matches!(
            refusal,
            Error::Approval(ApprovalError::SelfApproval { .. } | ApprovalError::Mismatch { .. })
        ),
        "{refusal:?}"
    );
    let error = block_on(pipeline.vote("r1", AUTHOR, Decision::Approve, "mine")).unwrap_err();
    assert!(
        matches!(&error, Error::Approval(ApprovalError::SelfApproval { person, .. }) if person == AUTHOR),
        "{error:?}"
    );
    // The journal's ballot is on the real request, and holds no vote of the author's.
    let ballot = block_on(pipeline.ballot("r1")).unwrap();
    assert_eq!(ballot.request().author, AUTHOR);
    assert_ne!(ballot.request(), &request);
    assert!(ballot.votes().is_empty(), "{:?}", ballot.votes());
}

#[test]
fn a_person_outside_the_policy_may_not_approve() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let error = sign_off(&pipeline, "r1", "mallory", "trust me").unwrap_err();
    match &error {
        Error::Approval(ApprovalError::NotAnApprover { person, pipeline }) => {
            assert_eq!(person, "mallory");
            assert_eq!(pipeline, "shop");
        }
        other => panic!("expected ApprovalError::NotAnApprover, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Approval);
    assert!(block_on(pipeline.ballot("r1")).unwrap().votes().is_empty());
    assert_eq!(
        approve_properly(staged, &pipeline).state(),
        StateName::Approved
    );
}
