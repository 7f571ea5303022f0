//! Gate combinators and timers: `and` / `or` / `not` / `all` / `any` / `k_of_n` against a
//! brute-force three-valued reference, the soak timer and the timeout combinator in virtual
//! time, and how their verdicts read in errors and records.

mod support;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use support::{START, block_on, clock, deployment, staged, standard_stages};
use tollgate::error::Error;
use tollgate::gate::{self, BoxGate, Gate, GateContext, GateError, GateExt, Move, Verdict};
use tollgate::lifecycle::StateName;
use tollgate::prelude::*;
use tollgate::time::{Clock, Timestamp};

const MINUTE: Duration = Duration::from_secs(60);

/// A deployment pipeline whose approve move is guarded by `gate`.
fn guarded(clock: &tollgate::time::ManualClock, gate: impl Gate + 'static) -> Pipeline<Deployment> {
    deployment("shop", clock)
        .stages(standard_stages())
        .gate(Move::Approve, gate)
        .build()
        .expect("valid pipeline")
}

#[test]
fn a_soak_gate_opens_exactly_when_its_time_is_up() {
    let clock = clock();
    clock.advance(7 * MINUTE);
    let pipeline = guarded(&clock, gate::soak(30 * MINUTE));
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let entered = staged.record().entered_at();
    assert_eq!(entered, clock.now());
    let deadline = entered.saturating_add(30 * MINUTE);

    clock.set(Timestamp::from_millis(deadline.as_millis() - 1));
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    match refused.error() {
        Error::Gate(GateError::Pending {
            gate,
            waiting_for,
            until,
        }) => {
            assert_eq!(gate, "soak 30m");
            assert!(waiting_for.contains("30m in staged"), "{waiting_for}");
            assert_eq!(*until, Some(deadline));
        }
        other => panic!("expected the soak to be pending, got {other:?}"),
    }
    let staged = refused.into_release();
    assert_eq!(staged.state(), StateName::Staged);

    clock.set(deadline);
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    let verdicts: Vec<_> = approved
        .record()
        .gates()
        .iter()
        .map(|r| (r.gate.as_str(), r.verdict.is_open(), r.at))
        .collect();
    assert_eq!(
        verdicts,
        [
            (
                "soak 30m",
                false,
                Timestamp::from_millis(deadline.as_millis() - 1)
            ),
            ("soak 30m", true, deadline)
        ]
    );
}

#[test]
fn a_timeout_turns_pending_into_closed_at_its_deadline() {
    let clock = clock();
    let waiting = gate::from_fn("canary-analysis", |_| Verdict::pending("enough samples"));
    let pipeline = guarded(&clock, waiting.timeout(Duration::from_secs(3600)));
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let deadline = staged
        .record()
        .entered_at()
        .saturating_add(Duration::from_secs(3600));

    clock.advance(59 * MINUTE);
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Gate(GateError::Pending { until: Some(u), .. }) if *u == deadline),
        "{:?}",
        refused.error()
    );
    let staged = refused.into_release();

    clock.set(deadline);
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    match refused.error() {
        Error::Gate(GateError::Closed { gate, reason }) => {
            assert_eq!(gate, "canary-analysis");
            assert_eq!(reason, "gave up after 1h waiting for enough samples");
        }
        other => panic!("expected the timeout to close the gate, got {other:?}"),
    }
}

#[test]
fn combinator_verdicts_name_what_blocks() {
    let clock = clock();
    let pipeline = guarded(&clock, gate::from_fn("x", |_| Verdict::Open));
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let release = staged.into_any();
    let environment = pipeline.production().clone();
    let ctx = GateContext::new(&release, Move::Approve, &environment, START);

    let tests = gate::from_fn("tests", |_| Verdict::Open);
    let scan = gate::from_fn("security-scan", |_| Verdict::pending("the scanner"));
    let freeze = gate::from_fn("freeze", |_| Verdict::closed("holiday freeze"));
    let checks = tests.and(scan).named("checks");
    assert_eq!(checks.name(), "checks");
    assert_eq!(
        block_on(checks.evaluate(&ctx)),
        Verdict::pending("1 of 2 open; `security-scan`: the scanner")
    );
    let shippable = checks.and(freeze.not());
    assert_eq!(shippable.name(), "(checks and not freeze)");
    // `not freeze` is open (the freeze gate is closed), `checks` still waits.
    assert!(matches!(
        block_on(shippable.evaluate(&ctx)),
        Verdict::Pending { .. }
    ));

    let quorum = gate::k_of_n(
        2,
        [
            gate::from_fn("eu", |_| Verdict::closed("error rate 3%")).boxed(),
            gate::from_fn("us", |_| Verdict::Open).boxed(),
            gate::from_fn("ap", |_| Verdict::closed("latency p99 900ms")).boxed(),
        ],
    )
    .unwrap();
    assert_eq!(quorum.name(), "2 of (eu, us, ap)");
    assert_eq!(
        block_on(quorum.evaluate(&ctx)),
        Verdict::closed("1 of 2 open; `eu`: error rate 3%; `ap`: latency p99 900ms")
    );
    let error = gate::k_of_n(3, Vec::new()).unwrap_err();
    assert!(error.to_string().contains("between 1 and 0"), "{error}");
}

// ---- the combinators against a brute-force reference ----

/// A gate expression: leaves with fixed verdicts, and every combinator.
#[derive(Debug, Clone)]
enum Expr {
    Leaf(u8),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    All(Vec<Expr>),
    Any(Vec<Expr>),
    KOfN(usize, Vec<Expr>),
}

/// The three verdict kinds, as the reference sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Open,
    Closed,
    Pending,
}

fn leaf_verdict(leaf: u8) -> Verdict {
    match leaf % 3 {
        0 => Verdict::Open,
        1 => Verdict::closed(format!("leaf {leaf} says no")),
        _ => Verdict::pending(format!("leaf {leaf}")),
    }
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = any::<u8>().prop_map(Expr::Leaf);
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            inner.clone().prop_map(|a| Expr::Not(Box::new(a))),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Expr::All),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Expr::Any),
            prop::collection::vec(inner, 1..5)
                .prop_flat_map(|parts| (1..=parts.len(), Just(parts)))
                .prop_map(|(k, parts)| Expr::KOfN(k, parts)),
        ]
    })
}

/// The reference: count, by brute force, the ways the parts can still turn out.
fn reference(expr: &Expr) -> Kind {
    match expr {
        Expr::Leaf(leaf) => match leaf % 3 {
            0 => Kind::Open,
            1 => Kind::Closed,
            _ => Kind::Pending,
        },
        Expr::And(a, b) => quorum(2, &[reference(a), reference(b)]),
        Expr::Or(a, b) => quorum(1, &[reference(a), reference(b)]),
        Expr::Not(a) => match reference(a) {
            Kind::Open => Kind::Closed,
            Kind::Closed => Kind::Open,
            Kind::Pending => Kind::Pending,
        },
        Expr::All(parts) => quorum(
            parts.len(),
            &parts.iter().map(reference).collect::<Vec<_>>(),
        ),
        Expr::Any(parts) => quorum(1, &parts.iter().map(reference).collect::<Vec<_>>()),
        Expr::KOfN(k, parts) => quorum(*k, &parts.iter().map(reference).collect::<Vec<_>>()),
    }
}

/// "At least `need` open", decided by trying every way the pending parts could resolve: open
/// if it holds however they resolve, closed if it holds in none, pending otherwise.
fn quorum(need: usize, parts: &[Kind]) -> Kind {
    let pending: Vec<usize> = (0..parts.len())
        .filter(|&i| parts[i] == Kind::Pending)
        .collect();
    let open = parts.iter().filter(|&&k| k == Kind::Open).count();
    let mut outcomes = (false, false);
    for mask in 0u32..(1 << pending.len()) {
        let opened = open + mask.count_ones() as usize;
        if opened >= need {
            outcomes.0 = true;
        } else {
            outcomes.1 = true;
        }
    }
    match outcomes {
        (true, false) => Kind::Open,
        (false, true) => Kind::Closed,
        _ => Kind::Pending,
    }
}

fn build(expr: &Expr) -> BoxGate {
    match expr {
        Expr::Leaf(leaf) => {
            let leaf = *leaf;
            gate::from_fn(format!("leaf-{leaf}"), move |_| leaf_verdict(leaf)).boxed()
        }
        Expr::And(a, b) => build(a).and(build(b)).boxed(),
        Expr::Or(a, b) => build(a).or(build(b)).boxed(),
        Expr::Not(a) => build(a).not().boxed(),
        Expr::All(parts) => gate::all(parts.iter().map(build)).boxed(),
        Expr::Any(parts) => gate::any(parts.iter().map(build)).boxed(),
        Expr::KOfN(k, parts) => gate::k_of_n(*k, parts.iter().map(build))
            .expect("k is within 1..=n")
            .boxed(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn combinators_agree_with_the_brute_force_reference(expr in expr()) {
        let clock = clock();
        let pipeline = guarded(&clock, gate::from_fn("x", |_| Verdict::Open));
        let (staged, _) = staged(&pipeline, "r1", "aaa");
        let release = staged.into_any();
        let environment = pipeline.production().clone();
        let ctx = GateContext::new(&release, Move::Approve, &environment, START);
        let gate = build(&expr);
        let verdict = block_on(gate.evaluate(&ctx));
        let kind = match verdict {
            v if v.is_open() => Kind::Open,
            Verdict::Closed { .. } => Kind::Closed,
            Verdict::Pending { .. } => Kind::Pending,
            other => return Err(TestCaseError::fail(format!("unexpected verdict {other:?}"))),
        };
        prop_assert_eq!(kind, reference(&expr), "{} on {:?}", gate.name(), expr);
    }
}

#[test]
fn gates_can_be_shared_between_pipelines() {
    // A gate behind an `Arc` guards two pipelines; both see the same verdict.
    let clock = clock();
    let shared = Arc::new(gate::soak(10 * MINUTE));
    let a = guarded(&clock, Arc::clone(&shared));
    let b = guarded(&clock, shared);
    let (staged_a, _) = staged(&a, "r1", "aaa");
    let (staged_b, _) = staged(&b, "r2", "bbb");
    clock.advance((10 * MINUTE).saturating_sub(Duration::from_millis(1)));
    let refused_a = block_on(staged_a.auto_approve(&a)).unwrap_err();
    let refused_b = block_on(staged_b.auto_approve(&b)).unwrap_err();
    for refused in [refused_a.error(), refused_b.error()] {
        assert!(
            matches!(refused, Error::Gate(GateError::Pending { gate, .. }) if gate == "soak 10m"),
            "{refused:?}"
        );
    }
    clock.advance(Duration::from_millis(1));
    assert!(block_on(refused_a.into_release().auto_approve(&a)).is_ok());
    assert!(block_on(refused_b.into_release().auto_approve(&b)).is_ok());
}

// ---- change windows ----

/// Friday 2026-11-20 14:00 UTC, which is 16:00 at UTC+02:00.
const FRIDAY_1400_UTC: u64 = 1_795_183_200_000;
const HOUR_MS: u64 = 3_600_000;

/// A staged release to evaluate gates against.
fn some_release() -> (AnyRelease, tollgate::environment::Environment) {
    let clock = clock();
    let pipeline = guarded(&clock, gate::from_fn("x", |_| Verdict::Open));
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    (staged.into_any(), pipeline.production().clone())
}

fn verdict_at(
    gate: &impl Gate,
    release: &AnyRelease,
    env: &tollgate::environment::Environment,
    at: u64,
) -> Verdict {
    let ctx = GateContext::new(release, Move::Deploy, env, Timestamp::from_millis(at));
    block_on(gate.evaluate(&ctx))
}

#[test]
fn a_weekend_freeze_blocks_its_whole_span_across_midnight_and_the_week_boundary() {
    let windows = gate::ChangeWindows::new("change-windows", "+02:00")
        .unwrap()
        .deny_weekly("weekend", "Fri 16:00", "Mon 08:00")
        .unwrap();
    let (release, env) = some_release();
    // Fri 16:00 +02:00 is 14:00 UTC; Mon 08:00 +02:00 is Mon 06:00 UTC, 64 hours later.
    let end = FRIDAY_1400_UTC + 64 * HOUR_MS;
    assert!(verdict_at(&windows, &release, &env, FRIDAY_1400_UTC - 1).is_open());
    for at in (FRIDAY_1400_UTC..end)
        .step_by(usize::try_from(HOUR_MS / 4).unwrap())
        .chain([end - 1])
    {
        match verdict_at(&windows, &release, &env, at) {
            Verdict::Pending { waiting_for, until } => {
                assert_eq!(until, Some(Timestamp::from_millis(end)), "at {at}");
                assert_eq!(
                    waiting_for,
                    "the end of deny window `weekend`, Fri 16:00 to Mon 08:00 UTC+02:00"
                );
            }
            other => panic!("open during the freeze at {at}: {other:?}"),
        }
    }
    assert!(verdict_at(&windows, &release, &env, end).is_open());
    // A week later the same window blocks again.
    let next_week = FRIDAY_1400_UTC + 7 * 24 * HOUR_MS;
    assert!(!verdict_at(&windows, &release, &env, next_week).is_open());
}

#[test]
fn a_holiday_freeze_spans_the_new_year_and_deny_beats_allow() {
    let windows = gate::ChangeWindows::new("change-windows", "-05:00")
        .unwrap()
        .allow_weekly("all-week", "Mon 00:00", "Sun 23:59")
        .unwrap()
        .deny_dates("holiday-freeze", "2026-12-21T00:00", "2027-01-04T08:00")
        .unwrap();
    let (release, env) = some_release();
    // 2026-12-31 22:00 UTC is 17:00 at UTC-05:00, inside the freeze and inside `all-week`.
    let new_years_eve = 1_798_754_400_000;
    let freeze_end = 1_798_754_400_000 + (3 * 24 + 15) * HOUR_MS; // 2027-01-04 08:00 -05:00
    match verdict_at(&windows, &release, &env, new_years_eve) {
        Verdict::Pending { until, waiting_for } => {
            assert_eq!(until, Some(Timestamp::from_millis(freeze_end)));
            assert!(waiting_for.contains("holiday-freeze"), "{waiting_for}");
        }
        other => panic!("expected the freeze to hold, got {other:?}"),
    }
    assert!(verdict_at(&windows, &release, &env, freeze_end).is_open());
}

#[test]
fn outside_every_allow_window_the_gate_waits_for_the_next_one() {
    let windows = gate::ChangeWindows::new("business-hours", "Z")
        .unwrap()
        .allow_weekly("monday", "Mon 09:00", "Mon 17:00")
        .unwrap()
        .allow_weekly("tuesday", "Tue 09:00", "Tue 17:00")
        .unwrap();
    let (release, env) = some_release();
    // Friday 14:00 UTC: the next allowed time is Monday 09:00, 67 hours later.
    match verdict_at(&windows, &release, &env, FRIDAY_1400_UTC) {
        Verdict::Pending { until, waiting_for } => {
            assert_eq!(
                until,
                Some(Timestamp::from_millis(FRIDAY_1400_UTC + 67 * HOUR_MS))
            );
            assert!(waiting_for.contains("`monday`"), "{waiting_for}");
        }
        other => panic!("expected to wait for Monday, got {other:?}"),
    }
    assert!(verdict_at(&windows, &release, &env, FRIDAY_1400_UTC + 67 * HOUR_MS).is_open());
}

#[test]
fn an_override_needs_a_person_and_a_reason_and_is_recorded() {
    let clock = clock();
    clock.set(Timestamp::from_millis(FRIDAY_1400_UTC - 10 * HOUR_MS));
    let windows = gate::ChangeWindows::new("change-windows", "+02:00")
        .unwrap()
        .deny_weekly("weekend", "Fri 16:00", "Mon 08:00")
        .unwrap()
        .overridable_by(["rita"])
        .unwrap();
    let overrides = windows.overrides();
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .gate(Move::Deploy, windows)
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    clock.set(Timestamp::from_millis(FRIDAY_1400_UTC + HOUR_MS));
    let refused = block_on(approved.deploy(&pipeline, &artifact)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Gate(GateError::Pending { .. })),
        "{:?}",
        refused.error()
    );
    let approved = refused.into_release();

    let blank = overrides
        .grant(
            approved.id(),
            "rita",
            "  ",
            Timestamp::from_millis(u64::MAX),
        )
        .unwrap_err();
    assert!(blank.to_string().contains("no reason"), "{blank}");
    let mallory = overrides
        .grant(
            approved.id(),
            "mallory",
            "trust me",
            Timestamp::from_millis(u64::MAX),
        )
        .unwrap_err();
    assert!(
        mallory.to_string().contains("may not override"),
        "{mallory}"
    );
    assert!(
        overrides.is_empty(),
        "a refused grant leaves nothing behind"
    );
    let until = clock.now().saturating_add(Duration::from_secs(3600));
    overrides
        .grant(approved.id(), "rita", "payment outage hotfix", until)
        .unwrap();
    let live = block_on(approved.deploy(&pipeline, &artifact)).unwrap();
    let last = live.record().gates().last().unwrap();
    assert_eq!(last.gate, "change-windows");
    assert_eq!(
        last.verdict,
        Verdict::Overridden {
            by: tollgate::id::Person::new("rita").unwrap(),
            reason: "payment outage hotfix".to_owned()
        }
    );
}

#[test]
fn an_override_ends_at_its_time_and_is_then_dropped() {
    let windows = gate::ChangeWindows::new("change-windows", "+02:00")
        .unwrap()
        .deny_weekly("weekend", "Fri 16:00", "Mon 08:00")
        .unwrap()
        .overridable_by(["rita"])
        .unwrap();
    let overrides = windows.overrides();
    let (release, env) = some_release();
    let until = FRIDAY_1400_UTC + 2 * HOUR_MS;
    overrides
        .grant(
            release.id(),
            "rita",
            "hotfix",
            Timestamp::from_millis(until),
        )
        .unwrap();
    assert!(matches!(
        verdict_at(&windows, &release, &env, until - 1),
        Verdict::Overridden { .. }
    ));
    assert_eq!(overrides.len(), 1);
    assert!(matches!(
        verdict_at(&windows, &release, &env, until),
        Verdict::Pending { .. }
    ));
    assert!(overrides.is_empty());
}

#[test]
fn malformed_windows_are_refused_with_what_is_wrong() {
    let base = || gate::ChangeWindows::new("w", "+01:00").unwrap();
    let cases: Vec<(Result<gate::ChangeWindows, GateError>, &str)> = vec![
        (gate::ChangeWindows::new("w", "CET"), "UTC offset"),
        (
            base().deny_weekly("x", "Friday 16:00", "Mon 08:00"),
            "weekday and time",
        ),
        (
            base().deny_weekly("x", "Fri 16:00", "Fri 16:00"),
            "starts where it ends",
        ),
        (
            base().deny_dates("x", "2027-01-04T08:00", "2026-12-21T00:00"),
            "ends before",
        ),
        (
            base().deny_dates("x", "next tuesday", "2026-12-21T00:00"),
            "not a date",
        ),
    ];
    for (result, needle) in cases {
        let error = result.unwrap_err();
        assert!(matches!(error, GateError::Invalid { .. }), "{error:?}");
        assert!(
            error.to_string().contains(needle),
            "{error} should say {needle:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A weekly deny window blocks exactly the instants a hand-written reference (days since
    /// the epoch, 1970-01-01 being a Thursday) puts inside it, in any offset.
    #[test]
    fn weekly_windows_agree_with_a_reference(
        offset_minutes in -12i64 * 60..=14 * 60,
        from in 0i64..7 * 24 * 60,
        to in 0i64..7 * 24 * 60,
        at in 1_700_000_000_000u64..1_800_000_000_000,
    ) {
        prop_assume!(from != to);
        let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let text = |m: i64| format!("{} {:02}:{:02}", days[usize::try_from(m / 1440).unwrap()], m % 1440 / 60, m % 60);
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let offset = format!("{sign}{:02}:{:02}", offset_minutes.abs() / 60, offset_minutes.abs() % 60);
        let windows = gate::ChangeWindows::new("w", &offset)
            .unwrap()
            .deny_weekly("x", &text(from), &text(to))
            .unwrap();
        let (release, env) = some_release();
        let local_ms = i64::try_from(at).unwrap() + offset_minutes * 60_000;
        let minute_of_week = (local_ms.div_euclid(60_000) + 3 * 1440).rem_euclid(7 * 1440);
        let inside = if from < to {
            (from..to).contains(&minute_of_week)
        } else {
            minute_of_week >= from || minute_of_week < to
        };
        let verdict = verdict_at(&windows, &release, &env, at);
        prop_assert_eq!(!verdict.is_open(), inside, "{} at local minute {}: {:?}", offset, minute_of_week, verdict);
    }
}

// ---- automated verdicts ----

/// A metric source that replays a script of samples, one per evaluation.
struct Script(std::sync::Mutex<std::collections::VecDeque<Option<f64>>>);

impl Script {
    fn new(samples: &[Option<f64>]) -> Self {
        Script(std::sync::Mutex::new(samples.iter().copied().collect()))
    }
}

#[async_trait::async_trait]
impl gate::MetricSource for Script {
    async fn sample(&self, _query: &str, _ctx: &GateContext<'_>) -> Option<f64> {
        self.0.lock().unwrap().pop_front().flatten()
    }
}

fn kinds(gate: &impl Gate, evaluations: usize) -> Vec<String> {
    let (release, env) = some_release();
    (0..evaluations)
        .map(
            |_| match verdict_at(gate, &release, &env, FRIDAY_1400_UTC) {
                v if v.is_open() => "open".to_owned(),
                Verdict::Closed { reason } => format!("closed: {reason}"),
                Verdict::Pending { waiting_for, .. } => format!("pending: {waiting_for}"),
                other => format!("{other:?}"),
            },
        )
        .collect()
}

#[test]
fn a_metric_gate_needs_consecutive_good_samples_and_waits_on_missing_data() {
    let canary = gate::MetricGate::new(
        "error-rate",
        Script::new(&[
            Some(0.001),
            None,
            Some(0.05),
            Some(0.002),
            Some(f64::NAN),
            Some(0.003),
            Some(0.004),
        ]),
        "rate(http_5xx[5m])",
        gate::Threshold::AtMost(0.01),
    )
    .failure_limit(1)
    .consecutive_successes(3);
    assert_eq!(
        kinds(&canary, 7),
        [
            "pending: 1 of 3 good samples in a row of `rate(http_5xx[5m])` <= 0.01",
            "pending: data for `rate(http_5xx[5m])` (1 of 3 good samples in a row)",
            "pending: 0 of 3 good samples in a row of `rate(http_5xx[5m])` <= 0.01",
            "pending: 1 of 3 good samples in a row of `rate(http_5xx[5m])` <= 0.01",
            "pending: data for `rate(http_5xx[5m])` (1 of 3 good samples in a row)",
            "pending: 2 of 3 good samples in a row of `rate(http_5xx[5m])` <= 0.01",
            "open",
        ]
    );
}

#[test]
fn a_metric_gate_closes_past_its_failure_limit_and_stays_closed() {
    let canary = gate::MetricGate::new(
        "latency",
        Script::new(&[Some(900.0), Some(950.0), Some(100.0)]),
        "p99_ms",
        gate::Threshold::AtMost(500.0),
    )
    .failure_limit(1);
    let verdicts = kinds(&canary, 3);
    assert!(verdicts[0].starts_with("pending"), "{verdicts:?}");
    assert_eq!(
        verdicts[1],
        "closed: `p99_ms` was 950, not <= 500: 2 bad samples, limit 1"
    );
    assert_eq!(
        verdicts[2],
        "closed: `p99_ms` failed 2 of 2 samples (limit 1)"
    );
}

#[test]
fn the_test_results_gate_reads_the_release_record() {
    let clock = clock();
    let flaky_once = {
        let failed = std::sync::atomic::AtomicBool::new(false);
        tollgate::executor::from_fn(move |_| {
            if failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                Ok(StageOutcome::success())
            } else {
                Ok(StageOutcome::failure("flaked"))
            }
        })
    };
    let build = |max_flaky: usize| {
        deployment("shop", &clock)
            .stage(Stage::build("compile").run(support::compile()))
            .stage(Stage::test("unit").after("compile").retry(
                tollgate::engine::RetryPolicy::attempts(2).backoff(
                    tollgate::engine::Backoff::Fixed {
                        delay: Duration::ZERO,
                    },
                ),
            ))
            .stage(Stage::stage("staging").run(support::ok()))
            .stage(Stage::deploy("production").run(support::ok()))
            .gate(Move::Approve, gate::TestResults::new().max_flaky(max_flaky))
    };
    let pipeline = build(0)
        .stage(Stage::test("lint").after("compile").run(support::ok()))
        .default_executor(flaky_once)
        .build()
        .unwrap();
    let (staged, _) = staged(&pipeline, "r1", "aaa");
    let refused = block_on(staged.auto_approve(&pipeline)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Gate(GateError::Closed { gate, reason })
            if gate == "test-results" && reason == "1 test stages passed only on a retry (unit), at most 0 allowed"),
        "{:?}",
        refused.error()
    );
}

#[test]
fn environment_gates_guard_deployments_into_their_environment_and_every_verdict_is_an_event() {
    let clock = clock();
    let log = tollgate::engine::EventLog::new();
    let pipeline = deployment("shop", &clock)
        .stages(standard_stages())
        .engine(
            tollgate::engine::Engine::builder()
                .observer(log.clone())
                .build()
                .unwrap(),
        )
        .environment_gate("production", gate::soak(30 * MINUTE))
        .unwrap()
        .environment_gate(
            "qa",
            gate::from_fn("never", |_| Verdict::closed("not ours")),
        )
        .unwrap()
        .build()
        .unwrap();
    let (staged, artifact) = staged(&pipeline, "r1", "aaa");
    // The approve move does not deploy, so production's gate is not asked yet.
    let approved = block_on(staged.auto_approve(&pipeline)).unwrap();
    let why = block_on(pipeline.explain(approved.record()));
    assert_eq!(why.next, Some(Move::Deploy));
    assert_eq!(why.gates.len(), 1);
    assert!(!why.is_ready());
    let text = why.to_string();
    assert!(
        text.starts_with("release r1 (approved, deployment): next move deploy to production"),
        "{text}"
    );
    assert!(text.contains("BLOCKS  soak 30m: pending until"), "{text}");
    assert_eq!(
        why.retry_at(),
        Some(approved.record().entered_at().saturating_add(30 * MINUTE))
    );

    let refused = block_on(approved.deploy(&pipeline, &artifact)).unwrap_err();
    assert!(
        matches!(refused.error(), Error::Gate(GateError::Pending { gate, .. }) if gate == "soak 30m")
    );
    clock.advance(30 * MINUTE);
    let live = block_on(refused.into_release().deploy(&pipeline, &artifact)).unwrap();
    let gate_events: Vec<(String, bool)> = log
        .events()
        .into_iter()
        .filter_map(|e| match e {
            tollgate::engine::Event::GateEvaluated { gate, verdict, .. } => {
                Some((gate, verdict.is_open()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        gate_events,
        [
            ("soak 30m".to_owned(), false),
            ("soak 30m".to_owned(), true)
        ]
    );
    assert_eq!(live.record().gates().len(), 2);
    let done = block_on(pipeline.explain(live.record()));
    assert_eq!(
        done.to_string(),
        "release r1 (deployed, deployment): deployed, no move left"
    );
}
