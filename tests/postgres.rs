//! The Postgres journal (feature `postgres`) against a real server: no mock database.
//!
//! Needs `TOLLGATE_PG_URL` (a database the tests may create schemas in) and, for the restart
//! test, `TOLLGATE_PG_RESTART` (a shell command that restarts that server). `.ci/run` starts a
//! private cluster with `.ci/postgres.sh` and sets both; without them every test fails and
//! says so. Each test works in a schema of its own; the restart test holds the others off
//! while the server is down.
//!
//! Replicas are real processes: this test binary run again with `TOLLGATE_PG_CHILD` naming
//! the part it plays (the `child_*` functions below are those parts, and do nothing in a
//! normal run).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures::future::join_all;
use proptest::prelude::*;
use serde_json::Value;
use support::{block_on, revision, standard_delivery};
use tollgate::executor::{ExecutorError, from_async_fn};
use tollgate::fact::votes_key;
use tollgate::fleet::{
    Actor, DeployKind, Fleet, FleetError, FleetFact, FleetOptions, Lifecycle, Phase,
    RollbackPolicy, TicketStatus,
};
use tollgate::journal::{
    ChainKey, Entry, Journal, JournalError, MemoryJournal, PgJournal, PgJournalOptions, Stored,
    check_key_chain, verify,
};
use tollgate::prelude::*;
use tollgate::release::StateName;
use tollgate::time::{ManualClock, Timestamp};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The server's URL, or a failure that says how to get one.
fn url() -> String {
    std::env::var("TOLLGATE_PG_URL").unwrap_or_else(|_| {
        panic!(
            "TOLLGATE_PG_URL is not set: the postgres tests need a server. `.ci/run` starts a \
             private one; by hand: `export TOLLGATE_PG_URL=$(.ci/postgres.sh start /tmp/tgpg)`"
        )
    })
}

/// Held (shared) by every test while it uses the server; the restart test holds it alone.
static SERVER: RwLock<()> = RwLock::new(());

fn server() -> RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(PoisonError::into_inner)
}

fn key() -> ChainKey {
    ChainKey::derive(b"tollgate postgres tests")
}

/// Runs `sql` with `psql` (as someone with write access to the database but not the key
/// would), and returns what it printed, unaligned.
fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([&url(), "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs (it comes with the postgresql package)");
    assert!(
        out.status.success(),
        "psql failed on `{sql}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Connects to schema `schema` as it is.
fn connect(schema: &str) -> PgJournal {
    block_on(PgJournal::connect_with(
        &url(),
        key(),
        PgJournalOptions::default().schema(schema),
    ))
    .expect("the test server is reachable")
}

/// An empty schema `schema` (dropped first if a run before left it), and a journal on it.
fn fresh(schema: &str) -> PgJournal {
    psql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    connect(schema)
}

fn entry(key: &str, payload: &str) -> Entry {
    Entry::new(key, payload.as_bytes().to_vec())
}

fn all(journal: &impl Journal) -> Vec<Stored> {
    block_on(journal.read(1, usize::MAX)).unwrap()
}

/// Kills the child if the test fails before it is done with it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This test binary, run again to play `role` in `schema` (with `args`), its stdout piped.
fn child(role: &str, schema: &str, args: &str) -> KillOnDrop {
    let name = format!("child_{role}");
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env("TOLLGATE_PG_CHILD", role)
        .env("TOLLGATE_PG_SCHEMA", schema)
        .env("TOLLGATE_PG_ARGS", args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// The schema and arguments of this process's part, when it is a child playing `role`.
fn playing(role: &str) -> Option<(String, String)> {
    (std::env::var("TOLLGATE_PG_CHILD").ok()? == role).then(|| {
        (
            std::env::var("TOLLGATE_PG_SCHEMA").unwrap(),
            std::env::var("TOLLGATE_PG_ARGS").unwrap_or_default(),
        )
    })
}

/// What a child printed on `line`, without the test harness's `test child_… ... ` before
/// its first line.
fn said(line: &str) -> &str {
    line.rsplit_once(" ... ")
        .map_or(line, |(_, said)| said)
        .trim()
}

/// Every line a child printed, until it exits; asserts it exited well.
fn lines_of(mut child: KillOnDrop) -> Vec<String> {
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let lines: Vec<String> = out
        .lines()
        .map_while(Result::ok)
        .map(|l| said(&l).to_owned())
        .collect();
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "a child failed: {status}; it said {lines:?}"
    );
    lines
}

// ---------------------------------------------------------------------------------------------
// The journal against the memory journal
// ---------------------------------------------------------------------------------------------

/// One step of a generated history.
#[derive(Debug, Clone)]
enum Op {
    /// Entries `(key, payload)`, with a condition on the first one's key if given (the
    /// condition names `head - back`, clamped).
    Append(Vec<(u8, Vec<u8>)>, Option<u64>),
    /// Several appends at once, committed together or not.
    Concurrent(Vec<(u8, Option<u64>)>),
    ReadKey(u8),
    Read(u64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop::collection::vec((0u8..4, prop::collection::vec(any::<u8>(), 0..40)), 0..5),
            prop::option::of(0u64..4),
        )
            .prop_map(|(entries, back)| Op::Append(entries, back)),
        2 => prop::collection::vec((0u8..4, prop::option::of(0u64..3)), 1..6).prop_map(Op::Concurrent),
        2 => (0u8..5).prop_map(Op::ReadKey),
        2 => (0u64..30, 0usize..10).prop_map(|(from, limit)| Op::Read(from, limit)),
    ]
}

fn same_answer<T: PartialEq + std::fmt::Debug>(
    pg: Result<T, JournalError>,
    memory: Result<T, JournalError>,
) -> Result<(), TestCaseError> {
    match (pg, memory) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(a), Err(b)) => prop_assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (a, b) => prop_assert!(false, "postgres {a:?}, memory {b:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Same appends, same answers, same MACs: the chain is the memory journal's, entry for
    /// entry. Concurrent appends are committed in some order; each keeps its own condition,
    /// and the memory journal replays them in the order Postgres gave them.
    #[test]
    fn the_postgres_journal_answers_as_the_memory_journal_does(ops in prop::collection::vec(op(), 1..16)) {
        let _server = server();
        let pg = fresh("prop");
        let memory = MemoryJournal::new(key());
        for op in ops {
            match op {
                Op::Append(entries, back) => {
                    let head = block_on(memory.head()).unwrap().0;
                    let mut entries: Vec<Entry> = entries
                        .into_iter()
                        .map(|(k, payload)| Entry::new(format!("k{k}"), payload))
                        .collect();
                    if let (Some(back), Some(first)) = (back, entries.first_mut()) {
                        first.expect_prev = Some(head.saturating_sub(back));
                    }
                    same_answer(block_on(pg.append(entries.clone())), block_on(memory.append(entries)))?;
                }
                Op::Concurrent(appends) => {
                    let last: Vec<u64> = (0..4)
                        .map(|k| block_on(memory.read_key(&format!("k{k}"))).unwrap().last().map_or(0, |s| s.seq))
                        .collect();
                    let entries: Vec<Entry> = appends
                        .iter()
                        .enumerate()
                        .map(|(i, &(k, back))| {
                            let e = entry(&format!("k{k}"), &format!("c{i}"));
                            match back {
                                Some(b) => e.after(last[usize::from(k)].saturating_sub(b)),
                                None => e,
                            }
                        })
                        .collect();
                    let answers = block_on(join_all(entries.iter().map(|e| pg.append(vec![e.clone()]))));
                    // Replay on the reference in the order of the sequence numbers given;
                    // the refused ones, checked against the reference afterwards.
                    let mut order: Vec<usize> = (0..entries.len()).collect();
                    order.sort_by_key(|&i| answers[i].as_ref().map_or(u64::MAX, |&s| s));
                    for i in order {
                        let expected = block_on(memory.append(vec![entries[i].clone()]));
                        match (&answers[i], expected) {
                            (Ok(a), Ok(b)) => prop_assert_eq!(*a, b),
                            (Err(JournalError::Conflict { .. }), Err(JournalError::Conflict { .. })) => {}
                            (a, b) => prop_assert!(false, "postgres {a:?}, memory {b:?}"),
                        }
                    }
                }
                Op::ReadKey(k) => {
                    let k = format!("k{k}");
                    same_answer(block_on(pg.read_key(&k)), block_on(memory.read_key(&k)))?;
                }
                Op::Read(from, limit) => same_answer(
                    block_on(pg.read(from, limit)),
                    block_on(memory.read(from, limit)),
                )?,
            }
            prop_assert_eq!(block_on(pg.head()).unwrap(), block_on(memory.head()).unwrap());
        }
        prop_assert_eq!(block_on(verify(&pg)).unwrap(), block_on(verify(&memory)).unwrap());
        prop_assert_eq!(all(&pg), all(&memory));
    }
}

// ---------------------------------------------------------------------------------------------
// Schema, settings
// ---------------------------------------------------------------------------------------------

#[test]
fn a_postgres_schema_newer_than_the_code_is_refused_and_left_alone() {
    let _server = server();
    let journal = fresh("newer");
    block_on(journal.append(vec![entry("r1", "started")])).unwrap();
    drop(journal);
    assert_eq!(
        psql("SELECT version FROM newer.schema_version"),
        PgJournal::SCHEMA_VERSION.to_string(),
        "a new schema is at the code's version"
    );
    let newer = PgJournal::SCHEMA_VERSION + 1;
    psql(&format!(
        "UPDATE newer.schema_version SET version = {newer}"
    ));
    let refused = block_on(PgJournal::connect_with(
        &url(),
        key(),
        PgJournalOptions::default().schema("newer"),
    ))
    .unwrap_err();
    match &refused {
        JournalError::Version {
            path,
            found,
            supported,
        } => {
            assert_eq!((*found, *supported), (newer, PgJournal::SCHEMA_VERSION));
            assert!(path.contains("newer"), "the error names the schema: {path}");
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    assert!(
        refused.to_string().contains("this tollgate reads up to"),
        "{refused}"
    );
    assert_eq!(
        psql("SELECT version FROM newer.schema_version"),
        newer.to_string()
    );
    assert_eq!(
        psql("SELECT count(*) FROM newer.journal"),
        "1",
        "nothing changed"
    );

    // Back at a version the code knows, it opens and keeps what it had.
    psql(&format!(
        "UPDATE newer.schema_version SET version = {}",
        PgJournal::SCHEMA_VERSION
    ));
    let journal = connect("newer");
    assert_eq!(block_on(verify(&journal)).unwrap().0, 1);
}

#[test]
fn replicas_connecting_at_once_to_a_new_postgres_schema_migrate_it_once() {
    let _server = server();
    psql("DROP SCHEMA IF EXISTS racing CASCADE");
    let journals = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| connect("racing"))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(psql("SELECT count(*) FROM racing.schema_version"), "1");
    for (i, j) in journals.iter().enumerate() {
        block_on(j.append(vec![entry("r", &i.to_string())])).unwrap();
    }
    assert_eq!(block_on(verify(&journals[0])).unwrap().0, 4);
}

#[test]
fn a_malformed_postgres_url_schema_name_or_unreachable_server_is_a_typed_error() {
    let bad_url = block_on(PgJournal::connect("postgresql://[::1", key())).unwrap_err();
    assert!(
        matches!(&bad_url, JournalError::Database { reason, in_doubt: false, .. } if reason.contains("URL")),
        "{bad_url:?}"
    );
    for schema in ["Robert'); DROP TABLE x;--", "", "9lives", &"a".repeat(41)] {
        let error = block_on(PgJournal::connect_with(
            &url(),
            key(),
            PgJournalOptions::default().schema(schema),
        ))
        .unwrap_err();
        assert!(
            matches!(&error, JournalError::Database { reason, .. } if reason.contains("schema name")),
            "{schema}: {error:?}"
        );
    }
    // Port 9 (discard) on localhost: nothing listens there.
    let unreachable = block_on(PgJournal::connect(
        "postgresql://nobody@127.0.0.1:9/none",
        key(),
    ))
    .unwrap_err();
    assert!(
        matches!(unreachable, JournalError::Database { .. }),
        "{unreachable:?}"
    );
}

#[test]
fn a_postgres_entry_over_the_limit_is_refused_before_anything_is_written() {
    let _server = server();
    psql("DROP SCHEMA IF EXISTS limits CASCADE");
    let journal = block_on(PgJournal::connect_with(
        &url(),
        key(),
        PgJournalOptions::default()
            .schema("limits")
            .max_entry_bytes(100),
    ))
    .unwrap();
    let error =
        block_on(journal.append(vec![entry("r1", "small"), Entry::new("r1", vec![0; 200])]))
            .unwrap_err();
    assert!(
        matches!(error, JournalError::TooLarge { limit: 100, .. }),
        "{error:?}"
    );
    assert_eq!(block_on(journal.head()).unwrap().0, 0);
    // Any bytes are fine in a key or a payload, NUL included.
    block_on(journal.append(vec![Entry::new("a\0b", vec![0, 1, 0])])).unwrap();
    assert_eq!(
        block_on(journal.read_key("a\0b")).unwrap()[0].payload,
        [0, 1, 0]
    );
}

#[test]
fn reading_past_the_end_of_a_postgres_journal_or_an_unknown_key_is_empty() {
    let _server = server();
    let journal = fresh("past");
    block_on(journal.append(vec![entry("r1", "a"), entry("r1", "b")])).unwrap();
    for from in [3, 1 << 40, u64::MAX] {
        assert!(
            block_on(journal.read(from, usize::MAX)).unwrap().is_empty(),
            "from {from}"
        );
    }
    assert_eq!(block_on(journal.read(0, 1)).unwrap().len(), 1);
    assert!(block_on(journal.read_key("r2")).unwrap().is_empty());
}

#[test]
fn restoring_one_release_from_a_million_postgres_facts_reads_the_key_index_only() {
    let _server = server();
    psql("DROP SCHEMA IF EXISTS million CASCADE");
    drop(connect("million"));
    // A million rows over 10,000 keys, made by the server (the chain does not matter to the
    // planner), then the statistics the planner goes by.
    psql(
        "INSERT INTO million.journal (seq, key, key_prev, payload, prev, hash)
         SELECT n, convert_to('r' || (n % 10000), 'UTF8'), 0, '\\x7b7d', '\\x00', '\\x00'
         FROM generate_series(1, 1000000) AS n;
         ANALYZE million.journal",
    );
    // The statement `read_key` runs.
    let plan = psql(
        "EXPLAIN SELECT seq, key, key_prev, payload, prev, hash FROM million.journal
         WHERE key = convert_to('r42', 'UTF8') ORDER BY seq",
    );
    assert!(
        plan.contains("Index Scan using journal_key_seq")
            || plan.contains("Bitmap Index Scan on journal_key_seq"),
        "{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

// ---------------------------------------------------------------------------------------------
// Attacks: rows edited by hand
// ---------------------------------------------------------------------------------------------

#[test]
fn a_postgres_row_edited_by_hand_is_found_by_verify_and_by_restore() {
    let _server = server();
    let journal = fresh("attack");
    let clock = support::clock();
    let pipeline = standard_delivery(&clock)
        .journal(journal.clone())
        .build()
        .unwrap();
    let _ = support::staged(&pipeline, "r1", "aaa");
    let _ = support::staged(&pipeline, "r2", "bbb");
    block_on(pipeline.restore("r1")).expect("untouched, it restores");
    psql("CREATE TABLE attack.kept AS SELECT * FROM attack.journal");
    // A fact of r1's in the middle of its history, and the one after it.
    let row = psql(
        "SELECT seq FROM attack.journal WHERE key = convert_to('r1', 'UTF8') ORDER BY seq OFFSET 2 LIMIT 1",
    );
    let attacks = [
        (
            "a payload edited",
            format!(
                "UPDATE attack.journal SET payload = payload || '\\x20'::bytea WHERE seq = {row}"
            ),
        ),
        (
            "a MAC edited",
            format!(
                "UPDATE attack.journal SET hash = set_byte(hash, 0, get_byte(hash, 0) # 1) WHERE seq = {row}"
            ),
        ),
        (
            "a row moved to another sequence number",
            format!("UPDATE attack.journal SET seq = seq + 100000 WHERE seq = {row}"),
        ),
        (
            "a row removed",
            format!("DELETE FROM attack.journal WHERE seq = {row}"),
        ),
        (
            "a row filed under another key",
            format!("UPDATE attack.journal SET key = convert_to('r2', 'UTF8') WHERE seq = {row}"),
        ),
        (
            "a back-link edited",
            format!("UPDATE attack.journal SET key_prev = 0 WHERE seq = {row}"),
        ),
    ];
    for (what, sql) in attacks {
        psql(&sql);
        let found = block_on(verify(&journal));
        assert!(
            matches!(found, Err(JournalError::Corrupt { .. })),
            "{what}: verify says {found:?}"
        );
        support::assert_chain_refuses(block_on(pipeline.restore("r1")));
        psql("DELETE FROM attack.journal; INSERT INTO attack.journal SELECT * FROM attack.kept");
        block_on(verify(&journal)).expect("the table as it was");
    }
    // A row added by hand (the head row not moved): the next append refuses to chain onto it.
    psql(&format!(
        "INSERT INTO attack.journal SELECT seq + 1, key, key_prev, payload, hash, hash FROM attack.journal WHERE seq = {}",
        psql("SELECT max(seq) FROM attack.journal")
    ));
    let refused = block_on(journal.append(vec![entry("r1", "x")])).unwrap_err();
    assert!(
        matches!(refused, JournalError::Corrupt { .. }),
        "{refused:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Replicas: real processes on one database
// ---------------------------------------------------------------------------------------------

/// Appends per task of an appending replica.
const APPENDS: usize = 40;

/// Part of `postgres_replicas_appending_at_once_...`: 4 tasks, each appending to its own key
/// and then claiming the next turn on the shared key `turn`, on the condition that nobody
/// took one since it looked. Prints `ack <seq> <payload>`, `claim <seq> <after> <payload>`
/// or `lost <after>`.
#[test]
fn child_appender() {
    let Some((schema, w)) = playing("appender") else {
        return;
    };
    let journal = connect(&schema);
    block_on(join_all((0..4).map(|t| {
        let (journal, w) = (&journal, &w);
        async move {
            for i in 0..APPENDS {
                let payload = format!("{w}:{t}:{i}");
                let seq = journal
                    .append(vec![entry(&format!("w{w}"), &payload)])
                    .await
                    .unwrap();
                println!("ack {seq} {payload}");
                let last = journal
                    .read_key("turn")
                    .await
                    .unwrap()
                    .last()
                    .map_or(0, |s| s.seq);
                match journal
                    .append(vec![entry("turn", &payload).after(last)])
                    .await
                {
                    Ok(seq) => println!("claim {seq} {last} {payload}"),
                    Err(JournalError::Conflict { .. }) => println!("lost {last}"),
                    Err(other) => panic!("{other}"),
                }
            }
        }
    })));
}

#[test]
fn postgres_replicas_appending_at_once_leave_no_gap_no_fork_and_each_turn_claimed_once() {
    let _server = server();
    let journal = fresh("replicas");
    let children: Vec<KillOnDrop> = (0..3)
        .map(|w| child("appender", "replicas", &w.to_string()))
        .collect();
    let lines: Vec<String> = children.into_iter().flat_map(lines_of).collect();

    let mut acked = BTreeMap::new();
    let mut claims = BTreeMap::new();
    let mut lost = 0;
    for line in &lines {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["ack", seq, payload] => {
                acked.insert(seq.parse::<u64>().unwrap(), (*payload).to_owned());
            }
            ["claim", seq, after, payload] => {
                let previous = claims.insert(
                    after.parse::<u64>().unwrap(),
                    (seq.parse::<u64>().unwrap(), (*payload).to_owned()),
                );
                assert!(
                    previous.is_none(),
                    "the turn after {after} was claimed twice"
                );
            }
            ["lost", _] => lost += 1,
            _ => {}
        }
    }
    assert_eq!(acked.len(), 3 * 4 * APPENDS);
    assert_eq!(claims.len() + lost, 3 * 4 * APPENDS);
    assert!(lost > 0, "the replicas raced for turns");

    // No gap, no fork: one chain from 1 to the head, holding every acknowledged entry.
    let (head, _) = block_on(verify(&journal)).unwrap();
    assert_eq!(head as usize, acked.len() + claims.len());
    let stored = all(&journal);
    for (seq, payload) in &acked {
        assert_eq!(
            stored[*seq as usize - 1].payload,
            payload.as_bytes(),
            "entry {seq}"
        );
    }
    // The turns form one line: each claimed right after the one before it.
    let turns = block_on(journal.read_key("turn")).unwrap();
    check_key_chain(journal.key(), &turns).unwrap();
    let mut after = 0;
    for turn in &turns {
        let (seq, payload) = &claims[&after];
        assert_eq!(
            (turn.seq, turn.payload.as_slice()),
            (*seq, payload.as_bytes())
        );
        after = turn.seq;
    }
    assert_eq!(turns.len(), claims.len());
}

/// Part of `an_approval_raced_by_postgres_replicas_is_used_once`: restores `r1`, issues its
/// approval from the journal's votes and tries to approve and deploy it. Prints `deployed`,
/// `refused <kind>`, or `refused already <state>` when another replica moved it first.
#[test]
fn child_approver() {
    let Some((schema, _)) = playing("approver") else {
        return;
    };
    let clock = support::clock();
    let pipeline = standard_delivery(&clock)
        .journal(connect(&schema))
        .build()
        .unwrap();
    block_on(async {
        let restored = pipeline.restore("r1").await.unwrap();
        if restored.state() != StateName::Staged {
            // Another replica was quicker: the release moved on before this one looked.
            println!("refused already {}", restored.state());
            return;
        }
        let staged = Release::<Staged, Delivery>::try_from(restored).unwrap();
        let Ok(approval) = pipeline.issue("r1").await else {
            println!("refused already approved");
            return;
        };
        match staged.approve(&pipeline, approval).await {
            Ok(approved) => {
                let artifact = approved.artifact().clone();
                approved.deploy(&pipeline, &artifact).await.unwrap();
                println!("deployed");
            }
            Err(refused) => println!("refused {:?}", refused.error().kind()),
        }
    });
}

#[test]
fn an_approval_raced_by_postgres_replicas_is_used_once() {
    let _server = server();
    let journal = fresh("approvals");
    let clock = support::clock();
    let pipeline = standard_delivery(&clock)
        .journal(journal.clone())
        .build()
        .unwrap();
    let _ = support::staged(&pipeline, "r1", "aaa");
    block_on(pipeline.vote("r1", "rita", tollgate::approval::Decision::Approve, "ok")).unwrap();

    let children: Vec<KillOnDrop> = (0..3).map(|_| child("approver", "approvals", "")).collect();
    let mut said: Vec<String> = children.into_iter().flat_map(lines_of).collect();
    said.retain(|l| l == "deployed" || l.starts_with("refused"));
    said.sort();
    // One deploys; the others lose the race for the move (a conflict), or look after it.
    assert_eq!(said.len(), 3, "{said:?}");
    assert_eq!(said[0], "deployed", "{said:?}");
    for other in &said[1..] {
        assert!(
            other == "refused Conflict" || other.starts_with("refused already"),
            "{said:?}"
        );
    }

    block_on(verify(&journal)).unwrap();
    let facts: Vec<Value> = block_on(journal.read_key("r1"))
        .unwrap()
        .iter()
        .map(|s| serde_json::from_slice(&s.payload).unwrap())
        .collect();
    let used = facts
        .iter()
        .filter(|f| f["fact"] == "approval_used")
        .count();
    assert_eq!(used, 1, "the approval was used once");
    let restored = block_on(pipeline.restore("r1")).unwrap();
    assert_eq!(restored.state(), StateName::Deployed);
}

// ---------------------------------------------------------------------------------------------
// A replica killed mid-move
// ---------------------------------------------------------------------------------------------

/// A deployment pipeline whose build is `fetch` → `compile` → `package` → `sign` →
/// `publish`; each stage calls `ran` with its name when it starts, and `package` hangs
/// forever when `hang` is set.
fn five_stage_build(
    clock: &ManualClock,
    journal: PgJournal,
    ran: &Arc<dyn Fn(&str) + Send + Sync>,
    hang: bool,
) -> Pipeline<Deployment> {
    let stage = |name: &'static str| {
        let ran = ran.clone();
        from_async_fn(move |ctx| {
            let ran = ran.clone();
            Box::pin(async move {
                ran(ctx.stage().as_str());
                if hang && ctx.stage().as_str() == "package" {
                    std::future::pending::<()>().await;
                }
                let mut outcome = StageOutcome::success().output("made", name);
                if name == "compile" {
                    outcome = outcome.artifact(support::artifact_for(ctx.revision()));
                }
                Ok::<_, ExecutorError>(outcome)
            })
        })
    };
    support::deployment("shop", clock)
        .stages(support::stages_after_build([
            Stage::build("fetch").run(stage("fetch")),
            Stage::build("compile").after("fetch").run(stage("compile")),
            Stage::build("package")
                .after("compile")
                .run(stage("package")),
            Stage::build("sign").after("package").run(stage("sign")),
            Stage::build("publish").after("sign").run(stage("publish")),
        ]))
        .journal(journal)
        .build()
        .unwrap()
}

/// Part of `a_postgres_replica_killed_mid_move_...`: starts `r1` and builds it until
/// `package` hangs, printing `ran <stage>` as each stage starts.
#[test]
fn child_builder() {
    let Some((schema, _)) = playing("builder") else {
        return;
    };
    let clock = support::clock();
    let ran: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(|stage: &str| println!("ran {stage}"));
    let pipeline = five_stage_build(&clock, connect(&schema), &ran, true);
    let fresh = pipeline.start("r1", revision("aaa")).unwrap();
    let _ = block_on(fresh.build(&pipeline));
    unreachable!("`package` hangs until the replica is killed");
}

#[test]
fn a_postgres_replica_killed_mid_move_is_finished_by_another_without_rerunning_stages() {
    let _server = server();
    let journal = fresh("killed");
    let mut builder = child("builder", "killed", "");
    let mut out = BufReader::new(builder.0.stdout.take().unwrap());
    let mut ran_there = Vec::new();
    while !ran_there.contains(&"package".to_owned()) {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the builder stopped early"
        );
        if let Some(stage) = said(&line).strip_prefix("ran ") {
            ran_there.push(stage.to_owned());
        }
    }
    assert_eq!(ran_there, ["fetch", "compile", "package"]);
    // Wait, through the journal's wake-ups, until both finished stages are committed.
    let stage_facts = |stored: &[Stored]| {
        stored
            .iter()
            .filter(|s| {
                serde_json::from_slice::<Value>(&s.payload).unwrap()["fact"] == "stage_finished"
            })
            .count()
    };
    loop {
        let facts = block_on(journal.read_key("r1")).unwrap();
        if stage_facts(&facts) == 2 {
            break;
        }
        block_on(journal.wait_for("r1", facts.last().map_or(0, |s| s.seq))).unwrap();
    }
    builder.0.kill().unwrap(); // SIGKILL, mid-move
    let status = builder.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    // Another replica, after the claim's lease, finishes the release from the journal.
    let clock = ManualClock::new(Timestamp::from_millis(
        support::START.as_millis() + 2 * 3600 * 1000,
    ));
    let calls_here = Arc::new(Mutex::new(Vec::new()));
    let log = calls_here.clone();
    let ran: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |stage: &str| {
        log.lock().unwrap().push(stage.to_owned());
    });
    let pipeline = five_stage_build(&clock, journal.clone(), &ran, false);
    let restored = block_on(pipeline.restore("r1")).unwrap();
    assert_eq!(restored.interrupted(), Some(Move::Build));
    let finished: Vec<&str> = restored
        .finished_stages()
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(finished, ["fetch", "compile"]);
    let fresh = Release::<Commit, Deployment>::try_from(restored).unwrap();
    block_on(async {
        let built = fresh.build(&pipeline).await.unwrap();
        let artifact = built.artifact().clone();
        assert_eq!(artifact, support::artifact_for("aaa"));
        let tested = built.test(&pipeline, &artifact).await.unwrap();
        let staged = tested.stage(&pipeline, &artifact).await.unwrap();
        let approved = staged.auto_approve(&pipeline).await.unwrap();
        approved.deploy(&pipeline, &artifact).await.unwrap();
    });
    assert_eq!(
        *calls_here.lock().unwrap(),
        ["package", "sign", "publish"],
        "the finished stages did not run again"
    );
    block_on(verify(&journal)).unwrap();
    assert_eq!(
        block_on(pipeline.restore("r1")).unwrap().state(),
        StateName::Deployed
    );
}

// ---------------------------------------------------------------------------------------------
// Wake-ups, and a server restarted mid-run
// ---------------------------------------------------------------------------------------------

#[test]
fn a_vote_appended_by_one_postgres_replica_wakes_the_replica_waiting_on_the_release() {
    let _server = server();
    // The waiting replica would re-read only after an hour: only the notification wakes it.
    psql("DROP SCHEMA IF EXISTS wake CASCADE");
    let waiting = block_on(PgJournal::connect_with(
        &url(),
        key(),
        PgJournalOptions::default()
            .schema("wake")
            .poll(Duration::from_secs(3600)),
    ))
    .unwrap();
    let other = connect("wake");
    let clock = support::clock();
    let parked = standard_delivery(&clock)
        .journal(waiting.clone())
        .build()
        .unwrap();
    let voting = standard_delivery(&clock).journal(other).build().unwrap();
    let (staged, _) = support::staged(&parked, "r1", "aaa");
    let votes = votes_key("r1");
    assert!(block_on(waiting.read_key(&votes)).unwrap().is_empty());
    block_on(async {
        let woken = waiting.wait_for(&votes, 0);
        let vote = async {
            voting
                .vote("r1", "rita", tollgate::approval::Decision::Approve, "ok")
                .await
                .unwrap()
        };
        let (woken, _) = futures::future::join(woken, vote).await;
        let seq = woken.unwrap();
        let last = waiting.read_key(&votes).await.unwrap().last().unwrap().seq;
        assert_eq!(last, seq);
        // The parked replica goes on with the vote another one took.
        let approval = parked.issue("r1").await.unwrap();
        staged.approve(&parked, approval).await.unwrap();
    });
}

#[test]
fn a_postgres_restart_mid_run_loses_nothing_acknowledged_and_the_journal_reconnects() {
    let _alone = SERVER.write().unwrap_or_else(PoisonError::into_inner);
    let restart = std::env::var("TOLLGATE_PG_RESTART").unwrap_or_else(|_| {
        panic!("TOLLGATE_PG_RESTART is not set: a command that restarts the test server (`.ci/run` sets it)")
    });
    let journal = fresh("restart");
    let (acks, acked_rx) = std::sync::mpsc::channel::<(u64, String)>();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let mut acked: Vec<(u64, String)> = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let payload = format!("p{i}");
                i += 1;
                match block_on(journal.append(vec![entry("r1", &payload)])) {
                    Ok(seq) => acks.send((seq, payload)).unwrap(),
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        });
        let wait = Duration::from_secs(60);
        let mut acked: Vec<(u64, String)> = (0..20)
            .map(|_| acked_rx.recv_timeout(wait).expect("appends go on"))
            .collect();
        let status = Command::new("sh").args(["-c", &restart]).status().unwrap();
        assert!(status.success(), "`{restart}` failed");
        let before = acked.len();
        while acked.len() < before + 20 {
            acked.push(
                acked_rx
                    .recv_timeout(wait)
                    .expect("the journal reconnects after the restart"),
            );
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        acked
    });
    acked.extend(acked_rx.try_iter());
    for failure in failures.into_inner().unwrap() {
        assert!(
            matches!(failure, JournalError::Database { .. }),
            "a failure is typed: {failure:?}"
        );
    }
    let (head, _) = block_on(verify(&journal)).unwrap();
    let stored = all(&journal);
    assert!(head as usize >= acked.len());
    for (seq, payload) in &acked {
        assert_eq!(
            stored[*seq as usize - 1].payload,
            payload.as_bytes(),
            "entry {seq}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fleets: replicas promoting at once, and one killed holding an environment's lock
// ---------------------------------------------------------------------------------------------

/// The fleet tests' releases, oldest first (started in this order).
const FLEET_RELEASES: [&str; 3] = ["1.0", "1.1", "1.2"];

/// The fleet tests' environments, one per phase: dev → test → prod.
const FLEET_ENVS: [&str; 3] = ["dev", "test", "prod"];

fn fleet_lifecycle() -> Lifecycle {
    Lifecycle::new([
        Phase::new("dev").environment("dev").unwrap(),
        Phase::new("test").environment("test").unwrap(),
        Phase::new("production").environment("prod").unwrap(),
    ])
    .unwrap()
}

/// The options every replica uses (a fleet checks each fact with its own): `rita` and
/// automated triggers may roll back; locks last `lease` (virtual time).
fn fleet_options(lease: Duration) -> FleetOptions {
    FleetOptions {
        lock_lease: lease,
        rollback: RollbackPolicy::people(["rita"]).unwrap(),
        ..FleetOptions::default()
    }
}

/// A deployment pipeline `fleet` on `clock` over `journal` whose deploy stage runs `deploy`.
fn fleet_pipeline(
    clock: &ManualClock,
    journal: PgJournal,
    deploy: impl tollgate::executor::Executor + 'static,
) -> Arc<Pipeline<Deployment>> {
    Arc::new(
        support::deployment("fleet", clock)
            .stages(vec![
                Stage::build("compile").run(support::compile()),
                Stage::test("unit").after("compile").run(support::ok()),
                Stage::stage("staging").run(support::ok()),
                Stage::deploy("roll-out").run(deploy),
            ])
            .journal(journal)
            .build()
            .unwrap(),
    )
}

/// Starts, builds, tests, stages and approves every release of [`FLEET_RELEASES`] in
/// `pipeline`, and registers each in a fleet whose locks last `lease` (the fleet's settings
/// are recorded once: every replica must open it with the same): what the replicas find in
/// the journal.
fn approved_and_registered(
    pipeline: &Arc<Pipeline<Deployment>>,
    lease: Duration,
) -> Fleet<Deployment> {
    block_on(async {
        let fleet = Fleet::open(
            Arc::clone(pipeline),
            fleet_lifecycle(),
            fleet_options(lease),
        )
        .await
        .unwrap();
        for id in FLEET_RELEASES {
            let built = pipeline
                .start(id, revision(&format!("rev-{id}")))
                .unwrap()
                .build(pipeline)
                .await
                .unwrap();
            let artifact = built.artifact().clone();
            let tested = built.test(pipeline, &artifact).await.unwrap();
            fleet.register(&tested).await.unwrap();
            let staged = tested.stage(pipeline, &artifact).await.unwrap();
            staged.auto_approve(pipeline).await.unwrap();
        }
        fleet
    })
}

/// The approved releases of [`FLEET_RELEASES`], as a replica restores them from the journal.
fn restored_releases(pipeline: &Pipeline<Deployment>) -> Vec<Release<Approved, Deployment>> {
    block_on(async {
        let mut releases = Vec::new();
        for id in FLEET_RELEASES {
            let restored = pipeline.restore(id).await.unwrap();
            releases.push(Release::<Approved, Deployment>::try_from(restored).unwrap());
        }
        releases
    })
}

/// A deploy stage that marks its environment busy with a file in `dir` created exclusively
/// (a second deployment at once in the environment finds it and prints `overlap <env>`),
/// holds it for a few milliseconds of real time, so that the replicas' deployments could
/// overlap if the locks let them, and frees it.
fn marking_deploy(dir: std::path::PathBuf) -> impl tollgate::executor::Executor + 'static {
    tollgate::executor::from_fn(move |ctx| {
        let env = ctx
            .environment()
            .map(|e| e.name().to_string())
            .unwrap_or_default();
        let busy = dir.join(format!("{env}.busy"));
        let mine = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&busy)
            .is_ok();
        if !mine {
            println!("overlap {env}");
        }
        // Real processes deploying: the lock, not luck, keeps them apart.
        std::thread::sleep(Duration::from_millis(15));
        if mine {
            std::fs::remove_file(&busy).unwrap();
        }
        println!("deployed {env} {}", ctx.release());
        Ok(StageOutcome::success())
    })
}

/// What a fleet operation came to, as a child prints it; a journal failure or a history
/// that does not replay fails the child.
fn outcome(what: &str, result: Result<tollgate::fleet::Deployment, FleetError>) -> String {
    match result {
        Ok(deployment) => format!("done {what} {:?}", deployment.status),
        Err(
            error
            @ (FleetError::Journal(_) | FleetError::Inconsistent { .. } | FleetError::Fact(_)),
        ) => panic!("{what}: {error}"),
        Err(error) => format!("refused {what} {:?}", error.kind()),
    }
}

/// Part of `postgres_fleet_replicas_...`: replica `w` (args `w dir`) opens the fleet and
/// promotes every release into every environment in an order of its own, redeploys each
/// environment, and (replica 1) rolls dev back; it prints what each came to.
#[test]
fn child_fleet_bot() {
    let Some((schema, args)) = playing("fleet_bot") else {
        return;
    };
    let (w, dir) = args.split_once(' ').unwrap();
    let w: usize = w.parse().unwrap();
    let clock = support::clock();
    let pipeline = fleet_pipeline(&clock, connect(&schema), marking_deploy(dir.into()));
    let releases = restored_releases(&pipeline);
    let order: [usize; 3] = [[0, 1, 2], [2, 1, 0], [1, 2, 0]][w];
    let bot = Actor::automation(format!("bot-{w}"));
    block_on(async {
        let fleet = Fleet::open(
            Arc::clone(&pipeline),
            fleet_lifecycle(),
            fleet_options(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        for env in FLEET_ENVS {
            for &r in &order {
                fleet.refresh().await.unwrap();
                let result = fleet.promote(&releases[r], env, bot.clone()).await;
                println!(
                    "{}",
                    outcome(&format!("promote {} {env}", FLEET_RELEASES[r]), result)
                );
            }
            let result = fleet.redeploy(env, bot.clone()).await;
            println!("{}", outcome(&format!("redeploy {env}"), result));
        }
        if w == 1 {
            fleet.refresh().await.unwrap();
            let rita = Actor::person("rita").unwrap();
            let result = fleet.rollback("dev", rita, "replica test").await;
            println!("{}", outcome("rollback dev", result));
        }
    });
}

#[test]
fn postgres_fleet_replicas_promoting_at_once_keep_one_deployment_per_environment_and_order() {
    let _server = server();
    let journal = fresh("fleet_bots");
    let clock = support::clock();
    let dir = std::env::temp_dir().join(format!("tollgate-fleet-bots-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pipeline = fleet_pipeline(&clock, journal.clone(), marking_deploy(dir.clone()));
    let fleet = approved_and_registered(&pipeline, Duration::from_secs(3600));

    let args = |w: usize| format!("{w} {}", dir.display());
    let children: Vec<KillOnDrop> = (0..3)
        .map(|w| child("fleet_bot", "fleet_bots", &args(w)))
        .collect();
    let lines: Vec<String> = children.into_iter().flat_map(lines_of).collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("overlap")),
        "two deployments ran at once in one environment: {lines:?}"
    );
    let deployed = lines.iter().filter(|l| l.starts_with("deployed ")).count();
    assert!(deployed >= 3, "the replicas deployed: {lines:?}");

    // Whatever still waits runs here; then 1.2 goes everywhere, the newest over all.
    let releases = restored_releases(&pipeline);
    block_on(async {
        for env in FLEET_ENVS {
            fleet.refresh().await.unwrap();
            fleet.drain(env).await.unwrap();
        }
        for env in FLEET_ENVS {
            fleet.refresh().await.unwrap();
            match fleet
                .promote(&releases[2], env, Actor::automation("ci"))
                .await
            {
                Ok(_) | Err(FleetError::AlreadyLive { .. }) => {}
                Err(error) => panic!("1.2 into {env}: {error}"),
            }
        }
    });
    let ledger = fleet.ledger();
    for env in FLEET_ENVS {
        assert_eq!(
            ledger
                .live_in(env)
                .map(|d| d.release.to_string())
                .as_deref(),
            Some("1.2"),
            "{ledger}"
        );
    }

    // A reference replay of the journal's fleet facts.
    let (live, bots, finished) = replay_fleet_facts(&all(&journal));
    assert!(
        finished >= deployed,
        "{finished} finished, {deployed} deployed"
    );
    for w in 0..3 {
        assert!(bots.contains(&format!("automation `bot-{w}`")), "{bots:?}");
    }
    for env in FLEET_ENVS {
        assert_eq!(live.get(env).map(String::as_str), Some("1.2"));
    }

    // Every fleet fact replays in a fresh fleet, to the same ledger; the chain verifies.
    let reopened = block_on(Fleet::open(
        Arc::clone(&pipeline),
        fleet_lifecycle(),
        fleet_options(Duration::from_secs(3600)),
    ))
    .unwrap();
    assert!(reopened.ledger().first_difference(&ledger).is_none());
    assert_eq!(reopened.ledger(), ledger);
    block_on(verify(&journal)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Replays the fleet facts of `stored` as a reference: asserts that no environment was ever
/// locked twice at once, that every lock was released by its own deployment, that every
/// deployment succeeded, and that no older release went live over a newer one but by a
/// rollback; returns the release live in each environment, who asked for deployments, and
/// how many finished.
fn replay_fleet_facts(
    stored: &[Stored],
) -> (
    BTreeMap<String, String>,
    std::collections::BTreeSet<String>,
    usize,
) {
    let order = |id: &str| FLEET_RELEASES.iter().position(|r| *r == id).unwrap();
    let mut tickets: BTreeMap<u64, (String, String, DeployKind)> = BTreeMap::new();
    let mut locked: BTreeMap<String, u64> = BTreeMap::new();
    let mut live: BTreeMap<String, String> = BTreeMap::new();
    let mut bots = std::collections::BTreeSet::new();
    let mut finished = 0;
    for s in stored
        .iter()
        .filter(|s| s.key.contains("\u{1f}fleet\u{1f}"))
    {
        match serde_json::from_slice::<FleetFact>(&s.payload).unwrap() {
            FleetFact::Queued {
                environment,
                release,
                kind,
                by,
                ..
            } => {
                bots.insert(by.to_string());
                tickets.insert(s.seq, (environment.to_string(), release.to_string(), kind));
            }
            FleetFact::Locked {
                environment,
                ticket,
                ..
            } => {
                let before = locked.insert(environment.to_string(), ticket);
                assert!(
                    before.is_none(),
                    "ticket {ticket} locked {environment} while {before:?} held it"
                );
            }
            FleetFact::Finished {
                environment,
                ticket,
                report,
                ..
            } => {
                finished += 1;
                assert_eq!(locked.remove(environment.as_str()), Some(ticket));
                assert!(report.succeeded(), "{report:?}");
                let (env, release, kind) = tickets[&ticket].clone();
                if let Some(before) = live.get(&env) {
                    assert!(
                        order(&release) >= order(before)
                            || matches!(kind, DeployKind::Rollback { .. }),
                        "{release} over {before} in {env} by {kind:?}"
                    );
                }
                live.insert(env, release);
            }
            _ => {}
        }
    }
    assert!(locked.is_empty(), "locks left: {locked:?}");
    (live, bots, finished)
}

/// The lease of the lock in `a_postgres_fleet_replica_killed_...` (virtual time).
const SHORT_LEASE: Duration = Duration::from_secs(60);

/// The deploy stage of `a_postgres_fleet_replica_killed_...`: with `log`, it records the
/// release there and succeeds; without, it prints `deploying <env>` and hangs until its
/// process is killed. One executor for both, since the executor's type is part of the
/// pipeline's fingerprint.
fn holdable_deploy(
    log: Option<Arc<Mutex<Vec<String>>>>,
) -> impl tollgate::executor::Executor + 'static {
    from_async_fn(move |ctx| {
        let env = ctx
            .environment()
            .map(|e| e.name().to_string())
            .unwrap_or_default();
        let release = ctx.release().to_string();
        let log = log.clone();
        Box::pin(async move {
            if let Some(log) = log {
                log.lock().unwrap().push(release);
            } else {
                println!("deploying {env}");
                std::future::pending::<()>().await;
            }
            Ok::<_, ExecutorError>(StageOutcome::success())
        })
    })
}

/// Part of `a_postgres_fleet_replica_killed_...`: promotes 1.0 into dev with a deploy stage
/// that prints `deploying <env>` and then hangs until the replica is killed.
#[test]
fn child_fleet_holder() {
    let Some((schema, _)) = playing("fleet_holder") else {
        return;
    };
    let clock = support::clock();
    let hang = holdable_deploy(None);
    let pipeline = fleet_pipeline(&clock, connect(&schema), hang);
    let releases = restored_releases(&pipeline);
    block_on(async {
        let fleet = Fleet::open(
            Arc::clone(&pipeline),
            fleet_lifecycle(),
            fleet_options(SHORT_LEASE),
        )
        .await
        .unwrap();
        let _ = fleet
            .promote(&releases[0], "dev", Actor::automation("holder"))
            .await;
    });
    unreachable!("the deploy stage hangs until the replica is killed");
}

#[test]
fn a_postgres_fleet_replica_killed_holding_a_lock_is_taken_over_after_its_lease() {
    let _server = server();
    let journal = fresh("fleet_killed");
    let clock = support::clock();
    let deploys = Arc::new(Mutex::new(Vec::new()));
    let deploy = holdable_deploy(Some(deploys.clone()));
    let pipeline = fleet_pipeline(&clock, journal.clone(), deploy);
    drop(approved_and_registered(&pipeline, SHORT_LEASE));

    let mut holder = child("fleet_holder", "fleet_killed", "");
    let mut out = BufReader::new(holder.0.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the holder stopped early"
        );
        if said(&line) == "deploying dev" {
            break;
        }
    }
    // The lock was committed before the deploy stage started.
    let dev = tollgate::fleet::environment_key(pipeline.name(), &"dev".parse().unwrap());
    let last = block_on(journal.read_key(&dev)).unwrap();
    let last: FleetFact = serde_json::from_slice(&last.last().unwrap().payload).unwrap();
    assert!(matches!(last, FleetFact::Locked { .. }), "{last:?}");
    holder.0.kill().unwrap(); // SIGKILL, mid-deploy, holding dev's lock
    let status = holder.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    // Another replica: within the lease the environment is still the dead one's, and the
    // deployment waits queued; after it, the replica takes dev over and finishes.
    let releases = restored_releases(&pipeline);
    let fleet = block_on(Fleet::open(
        Arc::clone(&pipeline),
        fleet_lifecycle(),
        fleet_options(SHORT_LEASE),
    ))
    .unwrap();
    let waiting = block_on(fleet.promote(&releases[0], "dev", Actor::automation("taker"))).unwrap();
    assert_eq!(waiting.status, TicketStatus::Queued);
    assert!(
        deploys.lock().unwrap().is_empty(),
        "nothing ran within the lease"
    );
    clock.advance(SHORT_LEASE);
    block_on(fleet.drain("dev")).unwrap();
    assert_eq!(*deploys.lock().unwrap(), ["1.0"]);

    let ledger = fleet.ledger();
    let history = &ledger.environment("dev").unwrap().history;
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(
        matches!(history[0].status, TicketStatus::Interrupted { .. }),
        "the cut-off deployment shows as interrupted: {history:?}"
    );
    assert!(
        matches!(history[1].status, TicketStatus::Deployed { .. }),
        "{history:?}"
    );
    assert_eq!(ledger.live_in("dev").unwrap().release.as_str(), "1.0");
    assert!(ledger.environment("dev").unwrap().running.is_none());

    // A fresh replica re-derives the same ledger; the chain verifies.
    let reopened = block_on(Fleet::open(
        Arc::clone(&pipeline),
        fleet_lifecycle(),
        fleet_options(SHORT_LEASE),
    ))
    .unwrap();
    assert_eq!(reopened.ledger(), ledger);
    block_on(verify(&journal)).unwrap();
}
