//! Feature `cdevents`: a delivery run's events as CDEvents v0.4, each checked against the
//! fields the spec's JSON schemas require, in the order a consumer would see them.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use support::{START, block_on, clock, standard_stages};
use tollgate::cdevents::{CdEvents, SPEC_VERSION};
use tollgate::engine::{Engine, EventLog};
use tollgate::fleet::{Actor, Fleet, FleetOptions, Lifecycle, Phase, RollbackPolicy, TicketStatus};
use tollgate::journal::{ChainKey, MemoryJournal};
use tollgate::prelude::*;
use tollgate::time::{ManualClock, run_virtual};

/// The subject type each event's type names (`dev.cdevents.<subject>.<predicate>.<version>`).
fn subject_type(kind: &str) -> &'static str {
    match kind {
        "pipelinerun" => "pipelineRun",
        "taskrun" => "taskRun",
        "artifact" => "artifact",
        "service" => "service",
        "environment" => "environment",
        other => panic!("no subject type for {other}"),
    }
}

/// The paths the v0.4 schema of `subject.predicate` requires inside `subject.content`.
fn required_content(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "artifact.packaged" => &[&["change", "id"]],
        "service.deployed" | "service.upgraded" | "service.rolledback" => {
            &[&["environment", "id"], &["artifactId"]]
        }
        _ => &[],
    }
}

fn string_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_str()
}

/// Checks one event against the spec: the context's required fields and their forms, the
/// subject's, and the content fields its type requires. Returns `subject.predicate`.
fn check(event: &Value) -> String {
    let context = &event["context"];
    assert_eq!(context["specversion"], SPEC_VERSION);
    for field in ["id", "source", "type", "timestamp"] {
        assert!(
            context[field].as_str().is_some_and(|s| !s.is_empty()),
            "context.{field} in {event}"
        );
    }
    let timestamp = context["timestamp"].as_str().unwrap();
    assert!(
        timestamp.parse::<jiff::Timestamp>().is_ok() && timestamp.ends_with('Z'),
        "timestamp {timestamp} is RFC 3339 in UTC"
    );
    let ty = context["type"].as_str().unwrap();
    let parts: Vec<&str> = ty.split('.').collect();
    assert_eq!(&parts[..2], ["dev", "cdevents"], "{ty}");
    assert_eq!(
        &parts[4..],
        ["0", "2", "0"],
        "{ty}: the v0.4 version of every mapped event"
    );
    let subject = &event["subject"];
    assert!(
        subject["id"].as_str().is_some_and(|s| !s.is_empty()),
        "subject.id in {event}"
    );
    assert_eq!(subject["type"], subject_type(parts[2]), "{event}");
    assert!(subject["content"].is_object(), "subject.content in {event}");
    let kind = format!("{}.{}", parts[2], parts[3]);
    for path in required_content(&kind) {
        assert!(
            string_at(&subject["content"], path).is_some(),
            "{kind} needs {path:?}: {event}"
        );
    }
    if let Some(run) = subject["content"].get("pipelineRun") {
        assert!(run["id"].as_str().is_some(), "pipelineRun.id in {event}");
    }
    kind
}

#[test]
fn a_delivery_run_as_cdevents_meets_the_spec() {
    let clock = clock();
    let log = EventLog::new();
    let pipeline = support::delivery("shop", &clock)
        .stages(standard_stages())
        .staging(Environment::new("preprod").unwrap())
        .engine(Engine::builder().observer(log.clone()).build().unwrap())
        .build()
        .unwrap();
    let (staged, artifact) = support::staged(&pipeline, "shop-1", "4f2a9c1");
    block_on(async {
        let approval = pipeline.sign_off("shop-1", "rita", "ok").await.unwrap();
        let approved = staged.approve(&pipeline, approval).await.unwrap();
        approved.deploy(&pipeline, &artifact).await.unwrap();
    });
    let cdevents = CdEvents::new("/tollgate/shop");
    let out: Vec<Value> = log
        .events()
        .iter()
        .flat_map(|e| cdevents.convert(e))
        .collect();
    let kinds: Vec<String> = out.iter().map(check).collect();
    assert_eq!(
        kinds,
        [
            "pipelinerun.queued",
            "pipelinerun.started",
            "taskrun.started",
            "taskrun.finished",
            "artifact.packaged",
            // unit, then lint: their executors finish as soon as they start
            "taskrun.started",
            "taskrun.finished",
            "taskrun.started",
            "taskrun.finished",
            "taskrun.started",
            "taskrun.finished",
            "taskrun.started",
            "taskrun.finished",
            "service.deployed",
            "environment.modified",
            "taskrun.started",
            "taskrun.finished",
            "service.deployed",
            "environment.modified",
            "pipelinerun.finished",
        ]
    );
    let ids: BTreeSet<&str> = out
        .iter()
        .map(|e| e["context"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), out.len(), "every event has its own id");
    // The artifact deployed is the one packaged, by digest.
    let purl = format!("pkg:generic/{}?checksum={}", artifact.name, artifact.digest);
    assert_eq!(out[4]["subject"]["id"], purl.as_str());
    assert_eq!(out[17]["subject"]["content"]["artifactId"], purl.as_str());
    assert_eq!(
        out[17]["subject"]["content"]["environment"]["id"],
        "production"
    );
    assert_eq!(out[19]["subject"]["content"]["outcome"], "success");
    let start =
        jiff::Timestamp::from_millisecond(i64::try_from(START.as_millis()).unwrap()).unwrap();
    assert_eq!(out[0]["context"]["timestamp"], start.to_string().as_str());
}

#[test]
fn a_second_deploy_to_an_environment_is_an_upgrade_and_a_refusal_ends_the_run() {
    let clock = clock();
    let log = EventLog::new();
    let pipeline = support::standard_deployment(&clock)
        .engine(Engine::builder().observer(log.clone()).build().unwrap())
        .build()
        .unwrap();
    for (id, rev) in [("shop-1", "1111111"), ("shop-2", "2222222")] {
        let (staged, artifact) = support::staged(&pipeline, id, rev);
        block_on(async {
            let approved = staged.auto_approve(&pipeline).await.unwrap();
            approved.deploy(&pipeline, &artifact).await.unwrap();
        });
    }
    let (built, _) = support::built(&pipeline, "shop-3", "3333333");
    let wrong = ArtifactRef::from_bytes("shop-api", b"another build");
    let refused = block_on(built.test(&pipeline, &wrong)).unwrap_err();

    let cdevents = CdEvents::new("/tollgate/shop");
    let out: Vec<Value> = log
        .events()
        .iter()
        .flat_map(|e| cdevents.convert(e))
        .collect();
    let services: Vec<(String, String)> = out
        .iter()
        .filter(|e| check(e).starts_with("service."))
        .map(|e| {
            (
                e["context"]["type"].as_str().unwrap().to_owned(),
                e["subject"]["content"]["environment"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            (
                "dev.cdevents.service.deployed.0.2.0".to_owned(),
                "staging".to_owned()
            ),
            (
                "dev.cdevents.service.deployed.0.2.0".to_owned(),
                "production".to_owned()
            ),
            (
                "dev.cdevents.service.upgraded.0.2.0".to_owned(),
                "staging".to_owned()
            ),
            (
                "dev.cdevents.service.upgraded.0.2.0".to_owned(),
                "production".to_owned()
            ),
        ]
    );
    let last = out.last().unwrap();
    assert_eq!(check(last), "pipelinerun.finished");
    assert_eq!(last["subject"]["id"], "shop-3");
    assert_eq!(last["subject"]["content"]["outcome"], "failure");
    assert_eq!(
        last["subject"]["content"]["errors"],
        refused.to_string().as_str()
    );
}

/// A fleet of the deployment pipeline `shop` over Dev → Production, where `rita` may roll
/// back; its deploy stage succeeds.
fn fleet() -> (ManualClock, Arc<Pipeline<Deployment>>, Fleet<Deployment>) {
    let clock = clock();
    let journal = Arc::new(MemoryJournal::new(ChainKey::derive(b"cdevents fleet")));
    let pipeline = Arc::new(
        Pipeline::<Deployment>::builder("shop")
            .clock(clock.clone())
            .journal(journal)
            .stage(Stage::build("compile").run(support::compile()))
            .stage(Stage::test("unit").after("compile").run(support::ok()))
            .stage(Stage::stage("staging").run(support::ok()))
            .stage(Stage::deploy("roll-out").run(support::ok()))
            .build()
            .unwrap(),
    );
    let lifecycle = Lifecycle::new([
        Phase::new("dev").environment("dev").unwrap(),
        Phase::new("production").environment("prod").unwrap(),
    ])
    .unwrap();
    let options = FleetOptions {
        rollback: RollbackPolicy::people(["rita"]).unwrap(),
        ..FleetOptions::default()
    };
    let fleet = run_virtual(
        &clock,
        Fleet::open(Arc::clone(&pipeline), lifecycle, options),
    )
    .unwrap();
    (clock, pipeline, fleet)
}

fn tested(
    clock: &ManualClock,
    pipeline: &Pipeline<Deployment>,
    id: &str,
) -> Release<Tested, Deployment> {
    run_virtual(clock, async {
        let built = pipeline
            .start(id, support::revision(&format!("rev-{id}")))
            .unwrap()
            .build(pipeline)
            .await
            .unwrap();
        let artifact = built.artifact().clone();
        built.test(pipeline, &artifact).await.unwrap()
    })
}

#[test]
fn fleet_deployments_are_service_deployed_upgraded_and_rolled_back() {
    let (clock, pipeline, fleet) = fleet();
    let ci = Actor::automation("ci");
    let r1 = tested(&clock, &pipeline, "1.0");
    let r2 = tested(&clock, &pipeline, "1.1");
    run_virtual(&clock, fleet.promote(&r1, "dev", ci.clone())).unwrap();
    let first = fleet.cdevents("/tollgate/shop");
    assert_eq!(first.len(), 1, "{first:?}");
    run_virtual(&clock, fleet.promote(&r2, "dev", ci.clone())).unwrap();
    let rita = Actor::person("rita").unwrap();
    run_virtual(&clock, fleet.rollback("dev", rita, "500s")).unwrap();
    run_virtual(&clock, fleet.redeploy("dev", ci)).unwrap();

    let out = fleet.cdevents("/tollgate/shop");
    assert_eq!(out[0], first[0], "an event is the same on every call");
    let kinds: Vec<String> = out.iter().map(check).collect();
    assert_eq!(
        kinds,
        [
            "service.deployed",
            "service.upgraded",
            "service.rolledback",
            "service.deployed",
        ]
    );
    let ids: BTreeSet<&str> = out
        .iter()
        .map(|e| e["context"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), out.len(), "every event has its own id");
    let purl = |release: &Release<Tested, Deployment>| {
        let a = release.artifact();
        format!("pkg:generic/{}?checksum={}", a.name, a.digest)
    };
    // deployed 1.0, upgraded to 1.1, rolled back to 1.0, 1.0 deployed again
    for (event, release) in out.iter().zip([&r1, &r2, &r1, &r1]) {
        assert_eq!(event["context"]["source"], "/tollgate/shop");
        assert_eq!(event["subject"]["id"], "shop");
        assert_eq!(event["subject"]["content"]["environment"]["id"], "dev");
        assert_eq!(
            event["subject"]["content"]["artifactId"],
            purl(release).as_str()
        );
    }
    let live = fleet.ledger().live_in("dev").unwrap().clone();
    let TicketStatus::Deployed { at } = live.status else {
        panic!("the redeploy went live: {live:?}");
    };
    let at = jiff::Timestamp::from_millisecond(i64::try_from(at.as_millis()).unwrap()).unwrap();
    assert_eq!(out[3]["context"]["timestamp"], at.to_string().as_str());
    assert!(
        out[3]["context"]["id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#fleet/dev/{}", live.ticket)),
        "{}",
        out[3]
    );
}
