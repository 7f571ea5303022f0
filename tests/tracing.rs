//! Feature `tracing`: every move is a span, its step a child, each stage a child of the step
//! and each attempt a child of its stage. Checked with a subscriber that records the tree.

mod support;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{clock, compile, ok, revision};
use tollgate::executor::from_fn;
use tollgate::graph::{Backoff, RetryPolicy};
use tollgate::prelude::*;
use tollgate::time::run_virtual;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span as recorded: its name, its fields, and its parent's index.
#[derive(Debug, Clone)]
struct Seen {
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<usize>,
}

/// Records every span with its parent (explicit, or the span entered when it was made).
#[derive(Default)]
struct Tree {
    spans: Mutex<Vec<Seen>>,
    entered: Mutex<Vec<u64>>,
    next: AtomicU64,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// The subscriber: a handle on a shared [`Tree`].
#[derive(Clone, Default)]
struct Recorder(Arc<Tree>);

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let mut fields = BTreeMap::new();
        attributes.record(&mut Fields(&mut fields));
        let parent = match attributes.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attributes.is_contextual() => self.0.entered.lock().unwrap().last().copied(),
            None => None,
        };
        let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.spans.lock().unwrap().push(Seen {
            name: attributes.metadata().name(),
            fields,
            parent: parent.map(|p| p as usize - 1),
        });
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        self.0.entered.lock().unwrap().push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut entered = self.0.entered.lock().unwrap();
        if let Some(at) = entered.iter().rposition(|&s| s == span.into_u64()) {
            entered.remove(at);
        }
    }
}

/// Each span as `name(field=value, …)` under its ancestors', outermost first.
fn paths(tree: &Tree) -> Vec<String> {
    let spans = tree.spans.lock().unwrap();
    let label = |s: &Seen| {
        let fields: Vec<String> = s.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}({})", s.name, fields.join(","))
    };
    spans
        .iter()
        .map(|span| {
            let mut path = vec![label(span)];
            let mut parent = span.parent;
            while let Some(p) = parent {
                path.push(label(&spans[p]));
                parent = spans[p].parent;
            }
            path.reverse();
            path.join(" > ")
        })
        .collect()
}

#[test]
fn moves_steps_stages_and_attempts_are_nested_spans() {
    let recorder = Recorder::default();
    let clock = clock();
    let tries = AtomicU32::new(0);
    let pipeline = Pipeline::<Delivery>::builder("shop")
        .clock(clock.clone())
        .stage(Stage::build("compile").run(compile()))
        .stage(
            Stage::test("unit")
                .after("compile")
                .retry(RetryPolicy::attempts(2).backoff(Backoff::Fixed {
                    delay: Duration::from_secs(5),
                }))
                .run(from_fn(move |_| {
                    if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err("flaky".into())
                    } else {
                        Ok(StageOutcome::success())
                    }
                })),
        )
        .stage(Stage::stage("staging").run(ok()))
        .stage(Stage::deploy("production").run(ok()))
        .approvals(ApprovalPolicy::any_of(["rita"]).unwrap())
        .build()
        .unwrap();
    tracing::subscriber::with_default(recorder.clone(), || {
        run_virtual(&clock, async {
            let built = pipeline
                .start("shop-1", revision("4f2a9c1"))
                .unwrap()
                .build(&pipeline)
                .await
                .unwrap();
            let artifact = built.artifact().clone();
            let tested = built.test(&pipeline, &artifact).await.unwrap();
            let staged = tested.stage(&pipeline, &artifact).await.unwrap();
            let approval = pipeline.sign_off("shop-1", "rita", "ok").await.unwrap();
            let approved = staged.approve(&pipeline, approval).await.unwrap();
            approved.deploy(&pipeline, &artifact).await.unwrap();
        });
    });
    let paths = paths(&recorder.0);
    let expected = [
        "move(mv=build,release=shop-1)",
        "move(mv=build,release=shop-1) > step(release=shop-1,step=build)",
        "move(mv=build,release=shop-1) > step(release=shop-1,step=build) > stage(stage=compile,step=build)",
        "move(mv=build,release=shop-1) > step(release=shop-1,step=build) > stage(stage=compile,step=build) > attempt(attempt=1)",
        "move(mv=test,release=shop-1)",
        "move(mv=test,release=shop-1) > step(release=shop-1,step=test)",
        "move(mv=test,release=shop-1) > step(release=shop-1,step=test) > stage(stage=unit,step=test)",
        "move(mv=test,release=shop-1) > step(release=shop-1,step=test) > stage(stage=unit,step=test) > attempt(attempt=1)",
        "move(mv=test,release=shop-1) > step(release=shop-1,step=test) > stage(stage=unit,step=test) > attempt(attempt=2)",
        "move(mv=stage,release=shop-1)",
        "move(mv=stage,release=shop-1) > step(release=shop-1,step=stage)",
        "move(mv=stage,release=shop-1) > step(release=shop-1,step=stage) > stage(stage=staging,step=stage)",
        "move(mv=stage,release=shop-1) > step(release=shop-1,step=stage) > stage(stage=staging,step=stage) > attempt(attempt=1)",
        "move(mv=approve,release=shop-1)",
        "move(mv=deploy,release=shop-1)",
        "move(mv=deploy,release=shop-1) > step(release=shop-1,step=deploy)",
        "move(mv=deploy,release=shop-1) > step(release=shop-1,step=deploy) > stage(stage=production,step=deploy)",
        "move(mv=deploy,release=shop-1) > step(release=shop-1,step=deploy) > stage(stage=production,step=deploy) > attempt(attempt=1)",
    ];
    assert_eq!(paths, expected);
}
