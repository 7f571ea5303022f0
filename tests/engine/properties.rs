//! Property tests on random DAGs: dependencies first, exactly the dependents of a failure
//! skipped, and retries, timeouts and finally stages keeping the engine's promises.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tollgate::engine::{
    Backoff, Engine, Event, EventLog, FailurePolicy, RetryPolicy, StepReport, final_statuses,
};
use tollgate::executor::StageStatus;
use tollgate::graph::{StageGraph, StageSpec};
use tollgate::time::Timestamp;

use crate::fixture::{
    Act, Mark, Seen, Trace, attempt_starts, graph_of, logged, millis, name, report_statuses, run,
    scripted, status, time_of,
};
use crate::support::clock;

/// A random DAG of 1..=`max` stages as the dependencies of each stage, all earlier stages.
fn dag(max: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1..=max).prop_flat_map(|n| {
        proptest::collection::vec((any::<u32>(), any::<u32>()), n).prop_map(|masks| {
            masks
                .iter()
                .enumerate()
                // Two masks and-ed: each possible edge is present with probability 1/4.
                .map(|(i, (a, b))| (0..i).filter(|&j| (a & b) >> j & 1 == 1).collect())
                .collect()
        })
    })
}

/// The stage index in a name made by [`name`].
fn index(stage: &str) -> usize {
    stage[1..].parse().expect("stage names are s<index>")
}

/// Test-step specs for `deps`, each changed by `adjust(index, spec)`.
fn specs(deps: &[Vec<usize>], adjust: impl Fn(usize, StageSpec) -> StageSpec) -> StageGraph {
    graph_of(deps.iter().enumerate().map(|(i, ds)| {
        let spec = ds
            .iter()
            .fold(StageSpec::test(name(i)), |s, &d| s.after(name(d)));
        adjust(i, spec)
    }))
}

/// The position in `seen` of the first entry for `stage` with `mark`.
fn position(seen: &[Seen], stage: &str, mark: Mark) -> Option<usize> {
    seen.iter().position(|s| s.stage == stage && s.mark == mark)
}

/// How a random stage behaves in the mixed property test.
#[derive(Debug, Clone)]
struct RandomStage {
    duration_ms: u64,
    /// Attempts up to this one fail.
    fails_through: u32,
    retry: RetryPolicy,
    attempt_timeout_ms: Option<u64>,
    finally: bool,
}

fn random_stage() -> impl Strategy<Value = RandomStage> {
    let backoff = prop_oneof![
        (0u64..20).prop_map(|ms| Backoff::Fixed { delay: millis(ms) }),
        (1u64..10, 1u32..4, 1u64..40).prop_map(|(initial, factor, max)| Backoff::Exponential {
            initial: millis(initial),
            factor,
            max: millis(max),
        }),
    ];
    (
        0u64..50,
        prop_oneof![Just(0u32), 1u32..3, Just(u32::MAX)],
        (1u32..4, backoff, 0u8..=100),
        proptest::option::of(1u64..60),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(duration_ms, fails_through, (attempts, backoff, jitter), timeout, finally)| {
                RandomStage {
                    duration_ms,
                    fails_through,
                    retry: RetryPolicy::attempts(attempts)
                        .backoff(backoff)
                        .jitter(jitter),
                    attempt_timeout_ms: timeout,
                    finally,
                }
            },
        )
}

/// One run of the mixed property test: the report, the events and what executors saw.
fn run_mixed(
    deps: &[Vec<usize>],
    stages: &[RandomStage],
    finally: &[bool],
    engine: &Engine,
    log: &EventLog,
) -> (StepReport, Vec<Event>, Vec<Seen>) {
    let graph = specs(deps, |i, spec| {
        let s = &stages[i];
        let spec = spec.retry(s.retry);
        let spec = match s.attempt_timeout_ms {
            Some(ms) => spec.attempt_timeout(millis(ms)),
            None => spec,
        };
        if finally[i] { spec.finally() } else { spec }
    });
    let trace = Trace::default();
    let behaviour: Vec<(u64, u32)> = stages
        .iter()
        .map(|s| (s.duration_ms, s.fails_through))
        .collect();
    let executor = scripted(&trace, move |ctx| {
        let (duration, fails_through) = behaviour[index(ctx.stage().as_str())];
        if ctx.attempt() <= fails_through {
            Act::fail_after(millis(duration), "random failure")
        } else {
            Act::sleep(millis(duration))
        }
    });
    let report = run(engine, &graph, &executor, &clock());
    (report, log.take(), trace.seen())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Beside this file (`properties.proptest-regressions`), where they were beside
        // `tests/engine.rs` before it became a folder; the default would look for a
        // `main.rs` and put them in `tests/proptest-regressions/`.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::with_cases(256)
    })]

    #[test]
    fn every_stage_of_a_random_dag_runs_once_after_its_dependencies(
        deps in dag(12),
        durations in proptest::collection::vec(0u64..30, 12),
        workers in 1usize..5,
    ) {
        let graph = specs(&deps, |_, spec| spec);
        let trace = Trace::default();
        let executor = scripted(&trace, move |ctx| {
            Act::sleep(millis(durations[index(ctx.stage().as_str())]))
        });
        let engine = Engine::builder().workers(workers).build().unwrap();

        let report = run(&engine, &graph, &executor, &clock());

        prop_assert!(report.succeeded());
        prop_assert!(trace.peak(None) <= workers);
        let seen = trace.seen();
        for (i, ds) in deps.iter().enumerate() {
            prop_assert_eq!(trace.starts_of(&name(i)), 1);
            let start = position(&seen, &name(i), Mark::Start).unwrap();
            for &d in ds {
                let done = position(&seen, &name(d), Mark::Succeeded).unwrap();
                prop_assert!(done < start, "s{} started before its dependency s{} finished", i, d);
                prop_assert!(seen[done].at <= seen[start].at);
            }
        }
    }

    #[test]
    fn under_continue_independent_exactly_the_dependents_of_a_failure_are_skipped(
        deps in dag(12),
        failing in any::<prop::sample::Index>(),
        workers in 1usize..5,
    ) {
        let failing = failing.index(deps.len());
        let graph = specs(&deps, |_, spec| spec);
        let trace = Trace::default();
        let executor = scripted(&trace, move |ctx| {
            if index(ctx.stage().as_str()) == failing {
                Act::fail_after(millis(5), "injected")
            } else {
                Act::sleep(millis(5))
            }
        });
        let engine = Engine::builder()
            .workers(workers)
            .failure_policy(FailurePolicy::ContinueIndependent)
            .build()
            .unwrap();

        let report = run(&engine, &graph, &executor, &clock());

        // Dependencies come earlier, so one pass in index order finds every dependent.
        let mut downstream = vec![false; deps.len()];
        for (i, ds) in deps.iter().enumerate() {
            downstream[i] = i != failing && ds.iter().any(|&d| d == failing || downstream[d]);
        }
        for (i, &skipped) in downstream.iter().enumerate() {
            let id = name(i);
            let status = status(&report, &id);
            if i == failing {
                prop_assert!(matches!(status, StageStatus::Failed { .. }), "{:?}", status);
            } else if skipped {
                prop_assert_eq!(status, &StageStatus::Skipped);
                prop_assert_eq!(trace.starts_of(&id), 0);
            } else {
                prop_assert_eq!(status, &StageStatus::Succeeded, "{}", id);
            }
        }
    }

    #[test]
    fn random_failures_retries_and_timeouts_keep_the_engine_s_promises(
        deps in dag(10),
        stages in proptest::collection::vec(random_stage(), 10),
        workers in proptest::option::of(1usize..4),
        continue_independent in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let n = deps.len();
        // A stage may be a finally stage only if every stage that depends on it is one too.
        let mut finally = vec![false; n];
        for i in (0..n).rev() {
            let dependents_finally = (i + 1..n).all(|j| !deps[j].contains(&i) || finally[j]);
            finally[i] = stages[i].finally && dependents_finally;
        }
        let policy = if continue_independent {
            FailurePolicy::ContinueIndependent
        } else {
            FailurePolicy::FailFast
        };
        let (engine, log) = logged(|b| {
            let b = b.failure_policy(policy).seed(seed);
            match workers {
                Some(w) => b.workers(w),
                None => b,
            }
        });

        let (report, events, seen) = run_mixed(&deps, &stages, &finally, &engine, &log);

        let last_ordinary_mark = seen
            .iter()
            .rposition(|s| !finally[index(&s.stage)]);
        for i in 0..n {
            let id = name(i);
            let stage = report.stage(&id).unwrap();
            let max = stages[i].retry.max_attempts;
            let tries = seen.iter().filter(|s| s.stage == id && s.mark == Mark::Start).count();
            prop_assert!(tries <= max as usize, "{} ran {} times, limit {}", id, tries, max);
            prop_assert_eq!(attempt_starts(&events, &id).len(), tries);
            prop_assert_eq!(stage.attempts().len(), tries, "attempts of {}", id);
            let numbers: Vec<u32> = stage.attempts().iter().map(|a| a.number).collect();
            prop_assert_eq!(numbers, (1..=tries as u32).collect::<Vec<_>>());
            let finished_attempts = events.iter().find_map(|e| match e {
                Event::StageFinished { stage, attempts, .. } if stage.as_str() == id => Some(*attempts),
                _ => None,
            });
            prop_assert_eq!(finished_attempts, Some(tries as u32));
            prop_assert!(seen.iter().filter(|s| s.stage == id).all(|s| s.attempt <= max));
            let Some(first) = position(&seen, &id, Mark::Start) else {
                continue;
            };
            if finally[i] {
                // Finally stages start after every ordinary stage has stopped.
                prop_assert!(last_ordinary_mark.is_none_or(|last| last < first));
                prop_assert_eq!(seen[first].step_outcome, Some(report.outcome));
            }
            for &d in &deps[i] {
                if finally[i] && !finally[d] {
                    continue;
                }
                let done = position(&seen, &name(d), Mark::Succeeded);
                prop_assert!(done.is_some_and(|done| done < first),
                    "{} started before its dependency s{} succeeded", id, d);
            }
        }
        // Finally stages run whenever the finally stages they follow succeeded.
        for i in (0..n).filter(|&i| finally[i]) {
            let blocked = deps[i].iter().any(|&d| finally[d] && !status(&report, &name(d)).is_success());
            let ran = position(&seen, &name(i), Mark::Start).is_some();
            prop_assert_eq!(ran, !blocked, "finally stage s{}", i);
        }
        let replayed = final_statuses(&events);
        prop_assert_eq!(replayed.len(), n);
        let replayed: BTreeMap<String, StageStatus> =
            replayed.into_iter().map(|(id, s)| (id.to_string(), s)).collect();
        prop_assert_eq!(replayed, report_statuses(&report));
        let times: Vec<Timestamp> = events.iter().map(time_of).collect();
        prop_assert!(times.is_sorted());

        // The same run in virtual time is the same run, to the millisecond.
        let (again, events_again, _) = run_mixed(&deps, &stages, &finally, &engine, &log);
        prop_assert_eq!(again, report);
        prop_assert_eq!(events_again, events);
    }
}
