//! The artifact is fixed at build: one per release, refused if another is handed to a later
//! move; and the outputs stages hand to the stages that depend on them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::approve_properly;
use crate::support::{
    artifact_for, block_on, built, clock, compile, delivery_pipeline, deployment,
    deployment_building_with, ok, revision, staged,
};
use tollgate::artifact::ArtifactError;
use tollgate::executor::from_fn;
use tollgate::prelude::*;
use tollgate::release::StateName;

// ---- the artifact is fixed at build ----

#[test]
fn a_different_artifact_is_refused_at_every_move_and_the_release_handed_back() {
    let clock = clock();
    let pipeline = delivery_pipeline(&clock);
    let (built, artifact) = built(&pipeline, "r1", "aaa");
    let other = ArtifactRef::from_bytes("app", b"a rebuilt binary");

    let check = |error: &Error| {
        assert!(
            matches!(error, Error::Artifact(ArtifactError::Mismatch { .. })),
            "{error:?}"
        );
        assert_eq!(error.kind(), ErrorKind::Artifact);
        let message = error.to_string();
        assert!(message.contains(&artifact.digest.to_string()), "{message}");
        assert!(message.contains(&other.digest.to_string()), "{message}");
    };

    let refused = block_on(built.test(&pipeline, &other)).unwrap_err();
    check(refused.error());
    let built = refused.into_release();
    assert_eq!(built.state(), StateName::Built);
    assert_eq!(
        built.record().steps().len(),
        1,
        "nothing ran for the refused move"
    );
    let tested = block_on(built.test(&pipeline, &artifact)).unwrap();

    let refused = block_on(tested.stage(&pipeline, &other)).unwrap_err();
    check(refused.error());
    let tested = refused.into_release();
    assert_eq!(tested.state(), StateName::Tested);
    let staged = block_on(tested.stage(&pipeline, &artifact)).unwrap();

    let approved = approve_properly(staged, &pipeline);
    let refused = block_on(approved.deploy(&pipeline, &other)).unwrap_err();
    check(refused.error());
    let approved = refused.into_release();
    assert_eq!(approved.state(), StateName::Approved);
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    assert_eq!(live.artifact().digest, artifact.digest);
    assert_eq!(live.record().steps().len(), 4);
}

#[test]
fn a_build_that_reports_no_artifact_fails_with_no_artifact() {
    let clock = clock();
    let pipeline = deployment_building_with(&clock, [Stage::build("compile").run(ok())]);
    let fresh = pipeline.start("r1", revision("aaa")).unwrap();
    let refused = block_on(fresh.build(&pipeline)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Artifact(ArtifactError::Missing { release }) if release == "r1"),
        "{:?}",
        refused.error()
    );
    assert_eq!(refused.kind(), ErrorKind::Artifact);
    let fresh = refused.into_release();
    assert_eq!(fresh.state(), StateName::Commit);
    assert!(fresh.record().artifact().is_none());
    assert_eq!(
        fresh.record().steps().len(),
        1,
        "the build attempt is recorded"
    );
}

#[test]
fn two_build_stages_with_different_artifacts_under_one_name_conflict() {
    let clock = clock();
    let reports = |name: &'static str| {
        from_fn(move |_| {
            Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes("app", name.as_bytes())))
        })
    };
    let pipeline = deployment_building_with(
        &clock,
        [
            Stage::build("server").run(reports("server")),
            Stage::build("client").run(reports("client")),
        ],
    );
    let refused = block_on(
        pipeline
            .start("r1", revision("aaa"))
            .unwrap()
            .build(&pipeline),
    )
    .unwrap_err();
    match refused.error() {
        Error::Artifact(ArtifactError::Conflicting {
            first_stage,
            first,
            second_stage,
            second,
        }) => {
            assert_eq!(first_stage, "server");
            assert_eq!(second_stage, "client");
            assert_eq!(first, &Digest::sha256(b"server"));
            assert_eq!(second, &Digest::sha256(b"client"));
        }
        other => panic!("expected ArtifactError::Conflicting, got {other:?}"),
    }
    let message = refused.to_string();
    assert!(
        message.contains("`server`") && message.contains("`client`"),
        "{message}"
    );
    assert_eq!(refused.into_release().state(), StateName::Commit);
}

#[test]
fn named_artifacts_of_several_build_stages_make_one_manifest_checked_at_every_move() {
    let clock = clock();
    let reports = |name: &'static str| {
        from_fn(move |_| {
            Ok(StageOutcome::success().artifact(ArtifactRef::from_bytes(name, name.as_bytes())))
        })
    };
    let pipeline = deployment_building_with(
        &clock,
        [
            Stage::build("server").run(reports("server.tar.gz")),
            Stage::build("client").run(reports("client.tar.gz")),
        ],
    );
    let (built, artifact) = built(&pipeline, "r1", "aaa");
    // One release digest: the manifest's, over both named artifacts.
    assert_eq!(artifact.artifacts.len(), 2);
    assert_eq!(
        artifact.artifacts["server.tar.gz"],
        Digest::sha256(b"server.tar.gz")
    );
    assert_eq!(
        artifact.digest,
        ArtifactRef::manifest_digest(&artifact.artifacts)
    );
    assert_eq!(built.artifact(), &artifact);

    // A manifest whose list was edited but kept the digest is refused at the next move.
    let mut edited = artifact.clone();
    edited
        .artifacts
        .insert("server.tar.gz".into(), Digest::sha256(b"a backdoor"));
    let refused = block_on(built.test(&pipeline, &edited)).unwrap_err();
    assert!(
        matches!(
            refused.error(),
            Error::Artifact(ArtifactError::ManifestMismatch { .. })
        ),
        "{:?}",
        refused.error()
    );
    // One artifact less is another digest: a mismatch.
    let built = refused.into_release();
    let fewer = ArtifactRef::manifest(
        "r1",
        [ArtifactRef::from_bytes("server.tar.gz", b"server.tar.gz")],
    )
    .unwrap();
    let refused = block_on(built.test(&pipeline, &fewer)).unwrap_err();
    assert!(
        matches!(
            refused.error(),
            Error::Artifact(ArtifactError::Mismatch { .. })
        ),
        "{:?}",
        refused.error()
    );
    // The manifest itself passes, and the restored release carries the same one.
    let tested = block_on(refused.into_release().test(&pipeline, &artifact)).unwrap();
    assert_eq!(tested.artifact(), &artifact);
    let restored = block_on(pipeline.restore(tested.id().as_str())).unwrap();
    assert_eq!(restored.record().artifact(), Some(&artifact));
}

#[test]
fn two_build_stages_with_the_same_artifact_agree() {
    let clock = clock();
    let pipeline = deployment_building_with(
        &clock,
        [
            Stage::build("compile").run(compile()),
            Stage::build("compile-again").run(compile()),
        ],
    );
    let (built, artifact) = built(&pipeline, "r1", "aaa");
    assert_eq!(artifact, artifact_for("aaa"));
    assert_eq!(built.state(), StateName::Built);
}

// ---- outputs ----

#[test]
fn outputs_reach_the_stages_that_depend_on_them_and_no_others() {
    let clock = clock();
    let seen: Arc<Mutex<BTreeMap<String, Option<String>>>> = Arc::default();
    let reader = || {
        let seen = Arc::clone(&seen);
        from_fn(move |ctx| {
            let digest = ctx.input("compile", "digest").map(str::to_owned);
            seen.lock().unwrap().insert(ctx.stage().to_string(), digest);
            Ok(StageOutcome::success())
        })
    };
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::build("package").after("compile").run(reader()))
        .stage(Stage::test("unit").after("compile").run(reader()))
        .stage(Stage::test("lint").run(reader()))
        .stage(Stage::test("fuzz").after("unit").run(reader()))
        .stage(Stage::stage("staging").run(reader()))
        .stage(Stage::deploy("production").after("compile").run(reader()))
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    block_on(approved.deploy(&pipeline, &artifact)).unwrap();

    let digest = Some(artifact.digest.to_string());
    let seen = seen.lock().unwrap().clone();
    let expected: BTreeMap<String, Option<String>> = [
        ("package", digest.clone()),
        ("unit", digest.clone()),
        ("lint", None),
        ("fuzz", None), // Only direct dependencies are visible.
        ("staging", None),
        ("production", digest),
    ]
    .into_iter()
    .map(|(stage, value)| (stage.to_owned(), value))
    .collect();
    assert_eq!(seen, expected);
}

#[test]
fn a_stage_output_comes_from_that_stage_s_latest_successful_run() {
    // Gates decide on `record().output(..)`, so it must name the stage's own value: not a
    // failed run's, not another stage's under the same key.
    let clock = clock();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let unit = {
        let runs = Arc::clone(&runs);
        from_fn(move |_| {
            // Passes with 91 % coverage, then fails, then passes with 95 %.
            match runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Ok(StageOutcome::success()
                    .output("coverage", "91")
                    .output("version", "harness-2")),
                1 => Ok(StageOutcome::failure("flaky").output("coverage", "12")),
                _ => Ok(StageOutcome::success().output("coverage", "95")),
            }
        })
    };
    let lint_runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lint = {
        let lint_runs = Arc::clone(&lint_runs);
        from_fn(move |_| {
            if lint_runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Ok(StageOutcome::failure("style"))
            } else {
                Ok(StageOutcome::success())
            }
        })
    };
    let pipeline = deployment("shop", &clock)
        .stage(Stage::build("compile").run(compile()))
        .stage(Stage::build("stamp").run(from_fn(|_| {
            Ok(StageOutcome::success().output("version", "1.4.0"))
        })))
        .stage(Stage::test("unit").run(unit))
        .stage(Stage::test("lint").after("unit").run(lint))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap();
    let (built, artifact) = built(&pipeline, "r1", "aaa");

    // First try: unit passes, lint fails.
    let built = block_on(built.test(&pipeline, &artifact))
        .unwrap_err()
        .into_release();
    assert_eq!(built.record().output("unit", "coverage"), Some("91"));
    // Second try: unit fails; its earlier success still stands, the failed run is ignored.
    let built = block_on(built.test(&pipeline, &artifact))
        .unwrap_err()
        .into_release();
    let record = built.record();
    assert_eq!(record.output("unit", "coverage"), Some("91"));
    assert_eq!(record.output("unit", "version"), Some("harness-2"));
    // Another stage's value under the same key, from a later step, is not the build's.
    assert_eq!(record.output("stamp", "version"), Some("1.4.0"));
    assert_eq!(
        record.output("compile", "digest"),
        Some(artifact.digest.to_string().as_str())
    );
    assert_eq!(record.output("lint", "coverage"), None);

    // Third try passes: the latest success wins.
    let tested = block_on(built.test(&pipeline, &artifact)).unwrap();
    assert_eq!(tested.record().output("unit", "coverage"), Some("95"));
    assert_eq!(tested.record().output("stamp", "version"), Some("1.4.0"));
}

// ---- manifests a build stage hands over ----

#[test]
fn a_build_stage_reporting_a_manifest_whose_list_was_edited_is_refused_at_build() {
    let clock = clock();
    // One stage reports a manifest of two files, then swaps one file's digest in the list
    // without the manifest's digest following: what a tampering build script would hand over.
    let mut forged = ArtifactRef::manifest(
        "bundle",
        [
            ArtifactRef::from_bytes("server.tar.gz", b"server"),
            ArtifactRef::from_bytes("client.tar.gz", b"client"),
        ],
    )
    .unwrap();
    forged
        .artifacts
        .insert("server.tar.gz".into(), Digest::sha256(b"a backdoor"));
    let handed = forged.clone();
    let pipeline = deployment_building_with(
        &clock,
        [Stage::build("bundle").run(from_fn(move |_| {
            Ok(StageOutcome::success().artifact(handed.clone()))
        }))],
    );
    let fresh = pipeline.start("r1", revision("aaa")).unwrap();
    let refused = block_on(fresh.build(&pipeline)).unwrap_err();
    match refused.error() {
        Error::Artifact(ArtifactError::ManifestMismatch {
            name,
            expected,
            found,
        }) => {
            assert_eq!(name, "bundle");
            assert_eq!(expected, &forged.digest);
            assert_eq!(found, &ArtifactRef::manifest_digest(&forged.artifacts));
        }
        other => panic!("expected a manifest mismatch, got {other:?}"),
    }
    assert_eq!(refused.into_release().state(), StateName::Commit);

    // The same manifest, unedited, is taken as it is.
    let honest = ArtifactRef::manifest(
        "bundle",
        [
            ArtifactRef::from_bytes("server.tar.gz", b"server"),
            ArtifactRef::from_bytes("client.tar.gz", b"client"),
        ],
    )
    .unwrap();
    let handed = honest.clone();
    let pipeline = deployment_building_with(
        &clock,
        [Stage::build("bundle").run(from_fn(move |_| {
            Ok(StageOutcome::success().artifact(handed.clone()))
        }))],
    );
    let (built, artifact) = built(&pipeline, "r2", "bbb");
    assert_eq!(artifact, honest);
    assert_eq!(built.artifact(), &honest);
}

#[test]
fn a_manifest_lists_a_name_once_and_refuses_one_name_with_two_digests() {
    let server = ArtifactRef::from_bytes("server.tar.gz", b"server");
    // The same file listed twice (two stages reporting it) is one entry.
    let twice = ArtifactRef::manifest("bundle", [server.clone(), server.clone()]).unwrap();
    assert_eq!(twice.artifacts.len(), 1);
    assert_eq!(twice.artifacts["server.tar.gz"], server.digest);
    let once = ArtifactRef::manifest("bundle", [server.clone()]).unwrap();
    assert_eq!(twice.digest, once.digest);

    // One name with two digests is refused, naming the name and both digests.
    let other = ArtifactRef::from_bytes("server.tar.gz", b"another server");
    let error = ArtifactRef::manifest("bundle", [server.clone(), other.clone()]).unwrap_err();
    match error {
        ArtifactError::DuplicateName {
            name,
            first,
            second,
        } => {
            assert_eq!(name, "server.tar.gz");
            assert_eq!(first, server.digest);
            assert_eq!(second, other.digest);
        }
        other => panic!("expected a duplicate name, got {other:?}"),
    }
}
