//! The artifact is re-verified at every move: a file whose bytes change after it was built
//! (rewritten in place) is refused by the next move, never shipped.

mod support;

use std::fs;
use std::path::PathBuf;

use support::{block_on, clock, deployment, revision};
use tollgate::artifact::{ArtifactError, ArtifactRef, FileArtifact};
use tollgate::executor::from_fn;
use tollgate::prelude::*;

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-bytes-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.bin");
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_file_rewritten_after_the_tests_is_refused_by_the_next_move() {
    let path = temp_file("rewritten", b"the tested build");
    let file = FileArtifact::open(&path).unwrap();
    let reported = ArtifactRef::new(file.name(), file.digest().clone());
    let ok = || from_fn(|_| Ok(StageOutcome::success()));
    let pipeline = deployment("shop", &clock())
        .stage(Stage::build("compile").run(from_fn(move |_| {
            Ok(StageOutcome::success().artifact(reported.clone()))
        })))
        .stage(Stage::test("unit").run(ok()))
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .build()
        .unwrap();
    let built = block_on(
        pipeline
            .start("r1", revision("aaa"))
            .unwrap()
            .build(&pipeline),
    )
    .unwrap();
    let tested = block_on(built.test(&pipeline, &file)).expect("the bytes are the ones built");

    fs::write(&path, b"something else, same name").unwrap();
    let refused =
        block_on(tested.stage(&pipeline, &file)).expect_err("changed bytes never move on");
    assert!(
        matches!(
            refused.error(),
            Error::Artifact(ArtifactError::Changed { .. })
        ),
        "{}",
        refused.error()
    );
    assert_eq!(refused.kind(), ErrorKind::Artifact);
    // Nothing ran: the staging step has no report.
    let tested = refused.into_release();
    assert!(
        tested
            .record()
            .steps()
            .iter()
            .all(|s| s.step != tollgate::lifecycle::Step::Stage)
    );

    // Put the tested bytes back: the move goes through.
    fs::write(&path, b"the tested build").unwrap();
    assert!(block_on(tested.stage(&pipeline, &file)).is_ok());
    let _ = fs::remove_dir_all(path.parent().unwrap());
}
