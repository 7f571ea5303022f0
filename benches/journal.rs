//! Benchmarks of the file journal, each beside a hand-written lower bound:
//!
//! - **append**: `N` small entries appended one per append by many concurrent appenders
//!   (group commit), against a loop that writes the same bytes with `write` + `fdatasync` in
//!   as many batches as the journal made group commits;
//! - **replay**: opening the journal (the scan checks every frame, CRC and MAC), and reading
//!   everything + [`verify`] on an open journal, against a loop that reads the file and
//!   decodes and checks the same (CRC, sequence, link, MAC, back-link) with no threads, no
//!   trait and no owned copies;
//! - **`read_key`**: one key's entries out of `KEYS` keys, against reading the whole file and
//!   picking that key's records;
//! - **`read_release`**: the checked read a restore starts with (one release's facts by key,
//!   each key's chain, and the whole chain from the release's first entry to the head),
//!   against a loop that reads the same range once, checks every MAC once and parses the
//!   release's facts: the least work that still checks every entry since the release began.
//!
//! Run with `cargo bench --bench journal` (N = 1,000,000, KEYS = 100,000: a few minutes);
//! `TOLLGATE_JOURNAL_N=100000 cargo bench --bench journal` for a quick run. The files live
//! under `std::env::temp_dir()` (set `TMPDIR` to put them on the disk to be measured) and are
//! removed at the end. A table of medians and ratios is printed last.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use futures::executor::block_on;
use futures::future::join_all;
use tollgate::fact::{Fact, read_release};
use tollgate::id::ReleaseId;
use tollgate::journal::{ChainHash, ChainKey, Entry, FileJournal, Journal, verify};
use tollgate::lifecycle::Move;
use tollgate::time::Timestamp;

/// The medians the summary is made of: each benchmark's measured runs.
static TIMES: Mutex<BTreeMap<&'static str, Vec<Duration>>> = Mutex::new(BTreeMap::new());

/// What the last group-commit run did: the file it left, and its group commits and appends.
static LAST_APPEND: Mutex<Option<(Vec<u8>, u64, u64)>> = Mutex::new(None);

fn record(name: &'static str, took: Duration) {
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

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn key() -> ChainKey {
    ChainKey::derive(b"benchmark key")
}

/// Entry `i` of a journal over `keys` keys: a release id and 32 bytes of payload.
fn entry(i: usize, keys: usize) -> Entry {
    let mut payload = format!("entry {i:>10} of the bench ").into_bytes();
    payload.resize(32, b'.');
    Entry::new(format!("release-{:06}", i % keys), payload)
}

struct Setup {
    dir: PathBuf,
    n: usize,
    keys: usize,
    appenders: usize,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Appends `n` entries from `appenders` concurrent appenders, one entry per append, to a new
/// journal at `path`; the time of the appends alone (not the open or the close).
fn group_commit_run(setup: &Setup, path: &Path) -> Duration {
    let _ = fs::remove_file(path);
    let journal = block_on(FileJournal::open(path, key())).expect("open");
    let (n, keys, appenders) = (setup.n, setup.keys, setup.appenders);
    let start = Instant::now();
    block_on(join_all((0..appenders).map(|w| {
        let journal = &journal;
        async move {
            for i in (w..n).step_by(appenders) {
                journal.append(vec![entry(i, keys)]).await.expect("append");
            }
        }
    })));
    let took = start.elapsed();
    let stats = journal.stats();
    block_on(journal.close());
    let bytes = fs::read(path).expect("the journal file");
    *LAST_APPEND.lock().unwrap_or_else(PoisonError::into_inner) =
        Some((bytes, stats.commits, stats.appends));
    took
}

/// The lower bound for group commit: the same bytes, written to a new file with `write` and
/// `fdatasync` in `commits` batches of equal size.
fn write_sync_run(path: &Path, bytes: &[u8], commits: u64) -> Duration {
    let _ = fs::remove_file(path);
    let mut file = File::create(path).expect("create");
    let (header, body) = bytes.split_at(16);
    file.write_all(header).expect("write");
    file.sync_data().expect("sync");
    let batch = body
        .len()
        .div_ceil(usize::try_from(commits.max(1)).unwrap_or(usize::MAX));
    let start = Instant::now();
    for chunk in body.chunks(batch.max(1)) {
        file.write_all(chunk).expect("write");
        file.sync_data().expect("sync");
    }
    start.elapsed()
}

/// Builds the journal the replay and `read_key` benchmarks read: `n` entries over `keys`
/// keys, appended 4096 at a time.
fn build_journal(setup: &Setup, path: &Path) {
    let _ = fs::remove_file(path);
    let journal = block_on(FileJournal::open(path, key())).expect("open");
    let mut i = 0;
    while i < setup.n {
        let group: Vec<Entry> = (i..setup.n.min(i + 4096))
            .map(|j| entry(j, setup.keys))
            .collect();
        i += group.len();
        block_on(journal.append(group)).expect("append");
    }
    block_on(journal.close());
}

/// A record of the documented format, decoded in place.
struct Raw<'a> {
    seq: u64,
    key_prev: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    key: &'a str,
    payload: &'a [u8],
    len: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes and CRC-checks the record at the start of `b` (the format on `FileJournal`'s docs).
fn raw_record(b: &[u8]) -> Raw<'_> {
    let body_len = u32_at(b, 0) as usize;
    let body = &b[8..8 + body_len];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&b[..4]);
    crc.update(body);
    assert_eq!(crc.finalize(), u32_at(b, 4), "a bad CRC");
    let key_len = u32_at(body, 80) as usize;
    Raw {
        seq: u64_at(body, 0),
        key_prev: u64_at(body, 8),
        prev: body[16..48].try_into().expect("32 bytes"),
        hash: body[48..80].try_into().expect("32 bytes"),
        key: std::str::from_utf8(&body[84..84 + key_len]).expect("UTF-8"),
        payload: &body[84 + key_len..],
        len: 8 + body_len,
    }
}

/// The lower bound for replay: read the file, decode every record and check what `verify`
/// checks, borrowing everything from one buffer. Returns the head.
fn raw_replay(path: &Path, key: &ChainKey) -> u64 {
    let bytes = fs::read(path).expect("read");
    let mut at = 16;
    let mut previous = [0; 32];
    let mut next = 1;
    let mut last_of_key: HashMap<&str, u64> = HashMap::new();
    while at < bytes.len() {
        let r = raw_record(&bytes[at..]);
        assert_eq!((r.seq, r.prev), (next, previous));
        let mac = key.link(&ChainHash(previous), r.seq, r.key, r.key_prev, r.payload);
        assert_eq!(mac.0, r.hash);
        let last = last_of_key.insert(r.key, r.seq).unwrap_or(0);
        assert_eq!(r.key_prev, last);
        previous = r.hash;
        next += 1;
        at += r.len;
    }
    next - 1
}

/// The lower bound for `read_key` without an index: read the whole file and pick `wanted`'s
/// records (CRC-checked, as the journal's reads are).
fn raw_read_key(path: &Path, wanted: &str) -> Vec<(u64, Vec<u8>)> {
    let bytes = fs::read(path).expect("read");
    let mut at = 16;
    let mut found = Vec::new();
    while at < bytes.len() {
        let r = raw_record(&bytes[at..]);
        if r.key == wanted {
            found.push((r.seq, r.payload.to_vec()));
        }
        at += r.len;
    }
    found
}

fn append(c: &mut Criterion, setup: &Setup) {
    let mut group = c.benchmark_group("append");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(1));
    let path = setup.path("append.journal");
    group.bench_function("file_journal", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let took = group_commit_run(setup, &path);
                    record("append/file_journal", took);
                    took
                })
                .sum()
        });
    });
    // The batches of the journal's last run (one more run if a filter skipped it).
    let last = LAST_APPEND
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let (bytes, commits, _) = last.unwrap_or_else(|| {
        group_commit_run(setup, &path);
        LAST_APPEND
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .expect("a run records its file")
    });
    let raw_path = setup.path("append.raw");
    group.bench_function("write_fdatasync", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let took = write_sync_run(&raw_path, &bytes, commits);
                    record("append/write_fdatasync", took);
                    took
                })
                .sum()
        });
    });
    group.finish();
    let _ = fs::remove_file(&path);
    let _ = fs::remove_file(&raw_path);
}

fn replay(c: &mut Criterion, setup: &Setup, path: &Path) {
    let mut group = c.benchmark_group("replay");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(1));
    group.bench_function("open", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    let journal = block_on(FileJournal::open(path, key())).expect("open");
                    let took = start.elapsed();
                    assert_eq!(journal.opened().entries, setup.n as u64);
                    block_on(journal.close());
                    record("replay/open", took);
                    took
                })
                .sum()
        });
    });
    let journal = block_on(FileJournal::open(path, key())).expect("open");
    group.bench_function("read_all_verify", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    let head = block_on(verify(&journal)).expect("verify");
                    let took = start.elapsed();
                    assert_eq!(head.0, setup.n as u64);
                    record("replay/read_all_verify", took);
                    took
                })
                .sum()
        });
    });
    block_on(journal.close());
    let key = key();
    group.bench_function("raw_decode_verify", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    let head = raw_replay(path, &key);
                    let took = start.elapsed();
                    assert_eq!(head, setup.n as u64);
                    record("replay/raw_decode_verify", took);
                    took
                })
                .sum()
        });
    });
    group.finish();
}

fn read_key(c: &mut Criterion, setup: &Setup, path: &Path) {
    let wanted = format!("release-{:06}", setup.keys / 2);
    let per_key = setup.n.div_ceil(setup.keys);
    let mut group = c.benchmark_group("read_key");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(1));
    let journal = block_on(FileJournal::open(path, key())).expect("open");
    group.bench_function("read_key", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    let found = block_on(journal.read_key(black_box(&wanted))).expect("read");
                    let took = start.elapsed();
                    assert!(found.len() + 1 >= per_key, "{} entries", found.len());
                    record("read_key/read_key", took);
                    took
                })
                .sum()
        });
    });
    block_on(journal.close());
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("read_whole_file", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    let found = raw_read_key(path, black_box(&wanted));
                    let took = start.elapsed();
                    assert!(found.len() + 1 >= per_key);
                    record("read_key/read_whole_file", took);
                    took
                })
                .sum()
        });
    });
    group.finish();
}

/// The release `read_release` reads: `facts` facts of its own, each followed by one entry of
/// another release, in a journal of `RELEASE_FACTS * 2` entries.
const RELEASE_FACTS: usize = 2_000;

/// Fact `i` of the release the `read_release` benchmark reads.
fn release_fact(id: &ReleaseId, i: usize) -> Fact {
    Fact::Refused {
        release: id.clone(),
        mv: Move::Build,
        reason: format!("refusal {i} of the bench"),
        at: Timestamp::from_millis(1_700_000_000_000 + i as u64),
    }
}

/// The lower bound for `read_release`: read every entry from the release's first on once,
/// check each MAC once, parse the release's own. Returns how many facts it parsed.
async fn raw_read_release(journal: &FileJournal, release: &str) -> usize {
    let entries = journal.read(1, usize::MAX).await.expect("read");
    let key = journal.key();
    let mut previous = ChainHash::GENESIS;
    let mut facts = Vec::new();
    for stored in &entries {
        assert_eq!(stored.prev, previous);
        key.check(stored).expect("every MAC holds");
        if stored.key == release {
            facts.push(Fact::from_stored(stored).expect("a fact"));
        }
        previous = stored.hash;
    }
    facts.len()
}

fn read_release_bench(c: &mut Criterion, setup: &Setup) {
    let path = setup.path("release.journal");
    let _ = fs::remove_file(&path);
    let id = ReleaseId::new("release-under-test").expect("a valid id");
    let journal = block_on(FileJournal::open(&path, key())).expect("open");
    let entries: Vec<Entry> = (0..RELEASE_FACTS)
        .flat_map(|i| [release_fact(&id, i).to_entry(), entry(i, setup.keys)])
        .collect();
    block_on(journal.append(entries)).expect("append");
    let mut group = c.benchmark_group("read_release");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(1));
    group.bench_function("read_release", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    let facts = block_on(read_release(&journal, black_box(id.as_str())))
                        .expect("the release reads");
                    let took = start.elapsed();
                    assert_eq!(facts.len(), RELEASE_FACTS);
                    record("read_release/read_release", took);
                    took
                })
                .sum()
        });
    });
    group.bench_function("read_once_mac_once", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let start = Instant::now();
                    let facts = block_on(raw_read_release(&journal, black_box(id.as_str())));
                    let took = start.elapsed();
                    assert_eq!(facts, RELEASE_FACTS);
                    record("read_release/read_once_mac_once", took);
                    took
                })
                .sum()
        });
    });
    group.finish();
    block_on(journal.close());
    let _ = fs::remove_file(&path);
}

// Counts of appends and bytes are far below 2^52, where f64 stops being exact.
#[allow(clippy::cast_precision_loss)]
fn summary(setup: &Setup) {
    let ms = |name| {
        median(name).map_or_else(
            || "-".to_owned(),
            |d| format!("{:.3}", d.as_secs_f64() * 1e3),
        )
    };
    let ratio = |floor, ours| match (median(floor), median(ours)) {
        (Some(f), Some(o)) => format!("{:.2}", f.as_secs_f64() / o.as_secs_f64()),
        _ => "-".to_owned(),
    };
    let groups = LAST_APPEND
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map_or_else(
            || "-".to_owned(),
            |(bytes, commits, appends)| {
                format!(
                    "{commits} group commits, {:.1} appends each, {:.1} MB",
                    *appends as f64 / (*commits).max(1) as f64,
                    bytes.len() as f64 / 1e6
                )
            },
        );
    println!(
        "\njournal: N = {}, keys = {}, appenders = {} (medians of this run, ms; ratio = lower bound / tollgate, higher is better, 1.0 = as fast as the bound)",
        setup.n, setup.keys, setup.appenders
    );
    println!("| what | tollgate | lower bound | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| append, group commit ({groups}) vs write + fdatasync per batch | {} | {} | {} |",
        ms("append/file_journal"),
        ms("append/write_fdatasync"),
        ratio("append/write_fdatasync", "append/file_journal")
    );
    println!(
        "| open (scan: CRC + MAC of every record) vs raw decode + verify | {} | {} | {} |",
        ms("replay/open"),
        ms("replay/raw_decode_verify"),
        ratio("replay/raw_decode_verify", "replay/open")
    );
    println!(
        "| read everything + verify (open journal) vs raw decode + verify | {} | {} | {} |",
        ms("replay/read_all_verify"),
        ms("replay/raw_decode_verify"),
        ratio("replay/raw_decode_verify", "replay/read_all_verify")
    );
    println!(
        "| read_key (1 of {} keys) vs reading the whole file | {} | {} | {} |",
        setup.keys,
        ms("read_key/read_key"),
        ms("read_key/read_whole_file"),
        ratio("read_key/read_whole_file", "read_key/read_key")
    );
    println!(
        "| read_release ({RELEASE_FACTS} facts, each followed by another release's entry) vs reading and MACing each entry once | {} | {} | {} |",
        ms("read_release/read_release"),
        ms("read_release/read_once_mac_once"),
        ratio(
            "read_release/read_once_mac_once",
            "read_release/read_release"
        )
    );
}

fn main() {
    let n = env_usize("TOLLGATE_JOURNAL_N", 1_000_000);
    let setup = Setup {
        dir: std::env::temp_dir().join(format!("tollgate-journal-bench-{}", std::process::id())),
        n,
        keys: env_usize("TOLLGATE_JOURNAL_KEYS", (n / 10).max(1)),
        appenders: env_usize("TOLLGATE_JOURNAL_APPENDERS", 1024),
    };
    fs::create_dir_all(&setup.dir).expect("a bench dir");
    let mut criterion = Criterion::default().configure_from_args();
    append(&mut criterion, &setup);
    let path = setup.path("replay.journal");
    build_journal(&setup, &path);
    replay(&mut criterion, &setup, &path);
    read_key(&mut criterion, &setup, &path);
    read_release_bench(&mut criterion, &setup);
    criterion.final_summary();
    let _ = fs::remove_dir_all(&setup.dir);
    summary(&setup);
}
