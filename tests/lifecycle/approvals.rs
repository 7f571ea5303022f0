//! Approvals: bound to one pipeline, release, artifact and environment, valid until they
//! expire, and given only by the people the policy names (never the author, unless the policy
//! says so). A refused approval hands the release back, still approvable.

use std::time::Duration;

use crate::support::{
    AUTHOR, START, block_on, clock, delivery, delivery_pipeline, delivery_pipeline_with, policy,
    staged, standard_delivery, standard_stages,
};
use crate::{HOUR, approve_properly};
use tollgate::approval::ApprovalError;
use tollgate::id::Person;
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
    let (a, _) = staged(&pipeline, "r1", "aaa");
    let (b, _) = staged(&pipeline, "r2", "aaa");
    let for_a = pipeline
        .sign_off(&a.approval_request(), "rita", "r1 looks good")
        .unwrap();
    let refused = block_on(b.approve(&pipeline, for_a)).unwrap_err();
    assert_mismatch(refused.error(), "release");
    assert_eq!(
        refused.to_string(),
        "approval by `rita` is for release `r1`, not `r2`"
    );
    still_staged_and_approvable(refused, &pipeline);
}

#[test]
fn an_approval_for_another_artifact_is_refused() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    // Release `r1` was started twice, from two revisions: the approval for the first one's
    // artifact must not ship the second one's.
    let (first, first_artifact) = staged(&pipeline, "r1", "aaa");
    let (second, second_artifact) = staged(&pipeline, "r1", "bbb");
    assert_ne!(first_artifact.digest, second_artifact.digest);
    let for_first = pipeline
        .sign_off(&first.approval_request(), "rita", "aaa is fine")
        .unwrap();
    let refused = block_on(second.approve(&pipeline, for_first)).unwrap_err();
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
    still_staged_and_approvable(refused, &pipeline);
}

#[test]
fn an_approval_from_another_pipeline_is_refused() {
    let clock = clock();
    let shop = delivery_pipeline(&clock);
    let blog = delivery("blog", &clock)
        .stages(standard_stages())
        .build()
        .unwrap();
    let (in_shop, _) = staged(&shop, "r1", "aaa");
    let (in_blog, _) = staged(&blog, "r1", "aaa");

    // Issued by the blog pipeline for the shop's release: refused when issued.
    let error = blog
        .sign_off(&in_shop.approval_request(), "rita", "wrong pipeline")
        .unwrap_err();
    assert_mismatch(&error, "pipeline");

    // Issued for the blog's release, used on the shop's release through the shop pipeline.
    let for_blog = blog
        .sign_off(&in_blog.approval_request(), "rita", "blog ok")
        .unwrap();
    let refused = block_on(in_shop.approve(&shop, for_blog)).unwrap_err();
    assert_mismatch(refused.error(), "pipeline");
    still_staged_and_approvable(refused, &shop);

    // Handing the blog's release to the shop pipeline is refused before the approval is read.
    let for_blog = blog
        .sign_off(&in_blog.approval_request(), "rita", "blog ok")
        .unwrap();
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
    let for_eu = eu
        .sign_off(&in_eu.approval_request(), "rita", "eu only")
        .unwrap();
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
    let approval = pipeline
        .sign_off(&staged.approval_request(), "rita", "ok")
        .unwrap();
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
    let approval = pipeline
        .sign_off(&at_deadline.approval_request(), "rita", "ok")
        .unwrap();
    clock.advance(HOUR);
    let refused = block_on(at_deadline.approve(&pipeline, approval)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Approval(ApprovalError::Expired { expired_at, now, .. }) if expired_at == now),
        "{:?}",
        refused.error()
    );

    let (just_before, _) = staged(&pipeline, "r2", "aaa");
    let approval = pipeline
        .sign_off(&just_before.approval_request(), "rita", "ok")
        .unwrap();
    clock.advance(HOUR.saturating_sub(Duration::from_millis(1)));
    let approved = block_on(just_before.approve(&pipeline, approval)).unwrap();
    assert_eq!(approved.state(), StateName::Approved);
}

#[test]
fn an_approval_lasts_24_hours_by_default() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    assert_eq!(ApprovalPolicy::DEFAULT_VALIDITY, DAY);
    assert_eq!(ApprovalPolicy::new().validity(), DAY);
    let clock = clock();
    // The standard policy sets no validity of its own.
    let pipeline = delivery_pipeline(&clock);

    let (at_deadline, _) = staged(&pipeline, "r1", "aaa");
    let (just_before, _) = staged(&pipeline, "r2", "aaa");
    let expiring = pipeline
        .sign_off(&at_deadline.approval_request(), "rita", "ok")
        .unwrap();
    let lasting = pipeline
        .sign_off(&just_before.approval_request(), "rita", "ok")
        .unwrap();
    assert_eq!(expiring.record().expires_at, START.saturating_add(DAY));

    clock.advance(DAY.saturating_sub(Duration::from_millis(1)));
    let approved = block_on(just_before.approve(&pipeline, lasting)).unwrap();
    assert_eq!(approved.state(), StateName::Approved);
    clock.advance(Duration::from_millis(1));
    let refused = block_on(at_deadline.approve(&pipeline, expiring)).unwrap_err();
    assert!(
        matches!(
            refused.error(),
            Error::Approval(ApprovalError::Expired { .. })
        ),
        "{:?}",
        refused.error()
    );
}

#[test]
fn an_author_may_not_approve_their_own_change() {
    let clock = clock();
    let pipeline =
        delivery_pipeline_with(&clock, ApprovalPolicy::any_of(["rita", AUTHOR]).unwrap());
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let error = pipeline
        .sign_off(&staged.approval_request(), AUTHOR, "my own change")
        .unwrap_err();
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
    let approval = pipeline
        .sign_off(&staged.approval_request(), AUTHOR, "hotfix, on call alone")
        .unwrap();
    assert!(approval.record().self_approved);
    let approved = block_on(staged.approve(&pipeline, approval)).unwrap();
    let record = approved.record().approval().unwrap();
    assert_eq!(record.approver, AUTHOR);
    assert!(record.self_approved);
}

#[test]
fn editing_the_request_author_does_not_bypass_the_self_approval_rule() {
    // `ApprovalRequest` is plain data with public fields, so a bot (or a person typing into
    // one) can hand `Pipeline::approve` a request whose author is someone else. The release
    // knows its real author; the author must still not be able to approve their change.
    let clock = clock();
    let pipeline =
        delivery_pipeline_with(&clock, ApprovalPolicy::any_of(["rita", AUTHOR]).unwrap());
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let mut request = staged.approval_request();
    request.author = Person::new("someone-else").unwrap();
    let refusal = match pipeline.sign_off(&request, AUTHOR, "my own change") {
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
}

#[test]
fn a_person_outside_the_policy_may_not_approve() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let error = pipeline
        .sign_off(&staged.approval_request(), "mallory", "trust me")
        .unwrap_err();
    match &error {
        Error::Approval(ApprovalError::NotAnApprover { person, pipeline }) => {
            assert_eq!(person, "mallory");
            assert_eq!(pipeline, "shop");
        }
        other => panic!("expected ApprovalError::NotAnApprover, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Approval);
    assert_eq!(
        approve_properly(staged, &pipeline).state(),
        StateName::Approved
    );
}
