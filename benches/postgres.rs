//! Appends per second on the Postgres journal (feature `postgres`) with 1, 4 and 16
//! concurrent writers, each making one-entry appends, beside a hand-written lower bound: the
//! same number of connections, each running `BEGIN; INSERT (one row of the same size, a
//! prepared statement); COMMIT` in a loop (no chain, no lock, no head row). The journal
//! serializes appends on its head row, so it nears the bound only by committing the appends
//! waiting together, in two round trips per transaction.
//!
//! Needs a server: `TOLLGATE_PG_URL=$(.ci/postgres.sh start /tmp/tgpg) cargo bench
//! --features postgres --bench postgres`. It works in the schemas `bench_journal` and
//! `bench_plain`, dropped and made again. A table of appends per second and ratios is
//! printed last.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use futures::executor::block_on;
use futures::future::join_all;
use tollgate::journal::{ChainKey, Entry, Journal, PgJournal, PgJournalOptions};

/// Appends each writer makes per measured run.
const PER_WRITER: usize = 100;

/// Payload size: about a fact's.
const PAYLOAD: usize = 300;

static TIMES: Mutex<BTreeMap<String, Vec<Duration>>> = Mutex::new(BTreeMap::new());

fn record(name: String, took: Duration) {
    TIMES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name)
        .or_default()
        .push(took);
}

fn median(name: &str) -> Option<Duration> {
    let times = TIMES.lock().unwrap_or_else(PoisonError::into_inner);
    let mut runs = times.get(name)?.clone();
    runs.sort();
    runs.get(runs.len() / 2).copied()
}

/// The journal: `writers` tasks, each appending `PER_WRITER` one-entry appends.
fn journal_run(journal: &PgJournal, writers: usize, round: usize) -> Duration {
    let started = Instant::now();
    block_on(join_all((0..writers).map(|w| async move {
        for i in 0..PER_WRITER {
            let payload = vec![b'x'; PAYLOAD];
            journal
                .append(vec![Entry::new(format!("r{round}-{w}-{}", i % 8), payload)])
                .await
                .expect("an append");
        }
    })));
    started.elapsed()
}

/// The lower bound: `writers` connections, each committing `PER_WRITER` one-row
/// transactions of plain `INSERT`s.
fn plain_run(
    runtime: &tokio::runtime::Runtime,
    clients: &[tokio_postgres::Client],
    round: usize,
) -> Duration {
    let started = Instant::now();
    runtime.block_on(join_all(clients.iter().enumerate().map(
        |(w, client)| async move {
            // Prepared once, as the journal's writer does.
            let insert = client
                .prepare("INSERT INTO bench_plain.journal VALUES ($1, $2, $3, $4, $5, $6)")
                .await
                .unwrap();
            for i in 0..PER_WRITER {
                let seq = i64::try_from((round * clients.len() + w) * PER_WRITER + i).unwrap();
                let key = format!("r{round}-{w}-{}", i % 8).into_bytes();
                client.batch_execute("BEGIN").await.unwrap();
                client
                    .execute(
                        &insert,
                        &[
                            &seq,
                            &key,
                            &0i64,
                            &vec![b'x'; PAYLOAD],
                            &vec![0u8; 32],
                            &vec![0u8; 32],
                        ],
                    )
                    .await
                    .unwrap();
                client.batch_execute("COMMIT").await.unwrap();
            }
        },
    )));
    started.elapsed()
}

fn main() {
    let url = std::env::var("TOLLGATE_PG_URL")
        .expect("TOLLGATE_PG_URL is not set: start a server with .ci/postgres.sh");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect = || {
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(async move { drop(connection.await) });
            client
        })
    };
    let admin = connect();
    runtime
        .block_on(admin.batch_execute(
            "DROP SCHEMA IF EXISTS bench_journal CASCADE;
             DROP SCHEMA IF EXISTS bench_plain CASCADE;
             CREATE SCHEMA bench_plain;
             CREATE TABLE bench_plain.journal (seq bigint PRIMARY KEY, key bytea NOT NULL,
                 key_prev bigint NOT NULL, payload bytea NOT NULL, prev bytea NOT NULL,
                 hash bytea NOT NULL);
             CREATE INDEX ON bench_plain.journal (key, seq);",
        ))
        .unwrap();
    let journal = block_on(PgJournal::connect_with(
        &url,
        ChainKey::derive(b"bench"),
        PgJournalOptions::default().schema("bench_journal"),
    ))
    .unwrap();

    let mut criterion = Criterion::default().configure_from_args().sample_size(10);
    let mut group = criterion.benchmark_group("postgres_append");
    group.sampling_mode(SamplingMode::Flat);
    let mut round = 0;
    for writers in [1usize, 4, 16] {
        group.bench_function(format!("journal/{writers}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let took = journal_run(&journal, writers, round);
                    record(format!("journal/{writers}"), took);
                    total += took;
                }
                total
            });
        });
        let clients: Vec<_> = (0..writers).map(|_| connect()).collect();
        group.bench_function(format!("plain_insert/{writers}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let took = plain_run(&runtime, &clients, round);
                    record(format!("plain_insert/{writers}"), took);
                    total += took;
                }
                total
            });
        });
    }
    group.finish();

    println!("\nwriters  journal appends/s  plain INSERT tx/s  journal / plain");
    for writers in [1usize, 4, 16] {
        let (Some(j), Some(p)) = (
            median(&format!("journal/{writers}")),
            median(&format!("plain_insert/{writers}")),
        ) else {
            continue;
        };
        let n = f64::from(u32::try_from(writers * PER_WRITER).unwrap_or(u32::MAX));
        let (js, ps) = (n / j.as_secs_f64(), n / p.as_secs_f64());
        println!("{writers:>7}  {js:>17.0}  {ps:>17.0}  {:>15.2}", js / ps);
    }
}
