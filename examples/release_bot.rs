//! A release bot: holds several staged releases of a continuous-delivery pipeline, takes
//! approval commands, explains what each release waits for, refuses what the policy forbids,
//! and ships each release once its policy and gates are satisfied.
//!
//! ```sh
//! cargo run --example release_bot                      # a scripted conversation
//! cargo run --example release_bot -- "status" "approve shop-2 as rita: looks good"
//! echo "approve shop-1 as dana" | cargo run --example release_bot
//!
//! # With a journal file, the bot's state survives between runs (and crashes):
//! cargo run --example release_bot -- --journal /tmp/bot.journal status
//! cargo run --example release_bot -- --journal /tmp/bot.journal "wait 30" \
//!     "approve shop-1 as rita: notes ok" "approve shop-1 as ines: reviewed" ship
//!
//! # Two replicas on one database (feature `postgres`)
//! cargo run --features postgres --example release_bot -- --postgres "$TOLLGATE_PG_URL" status
//! cargo run --features postgres --example release_bot -- --postgres "$TOLLGATE_PG_URL" "await shop-1 1" &
//! cargo run --features postgres --example release_bot -- --postgres "$TOLLGATE_PG_URL" \
//!     "approve shop-1 as rita: notes ok"        # the first copy wakes up
//! ```
//!
//! With `--journal`, every fact goes to that file (chained under the key in
//! `TOLLGATE_BOT_KEY`, or a development key the bot warns about), and each run restores the
//! releases from it: the first run stages them and parks them awaiting approval; a later run
//! restores them, takes the votes, and ships what the policy allows. `--postgres <url>` does
//! the same with a Postgres database (`tollgate::journal::PgJournal`), which several copies
//! of the bot share at once: a vote one copy takes wakes another that `await`s it, and a move
//! or an approval is taken by one copy only.
//!
//! Commands, one per argument or per line of standard input:
//!
//! - `status`: explain every release (gates, approvals, what would unblock it);
//! - `approve <release> as <person>[: reason]`;
//! - `approve <release> as <person> for <digest>[: reason]` (the digest the person reviewed);
//! - `reject <release> as <person>: reason`;
//! - `wait <minutes>`: let virtual time pass (the bot runs on a virtual clock here);
//! - `ship`: move every release whose policy and gates allow it to production;
//! - `await <release> <n>` (with `--postgres`): park until the release has `n` votes, taken by
//!   this copy of the bot or any other on the same database, then show its approval.
//!
//! A release waiting for a person or a timer is parked: the bot holds a value, not a thread,
//! and tries the move again when a command or a tick arrives.

// The shared pipeline of the delivery and deployment examples; this bot uses only its stages.
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::time::Duration;

use futures::executor::block_on;
use tollgate::approval::{Decision, Groups, Rule};
use tollgate::artifact::ArtifactError;
use tollgate::gate::{self, ChangeWindows, Move};
use tollgate::journal::{ChainKey, FileJournal, Journal};
use tollgate::lifecycle::StateName;
use tollgate::prelude::*;
use tollgate::time::{Clock as _, ManualClock, Timestamp};

/// Monday 2026-11-23 10:00 UTC: a working morning, so the change windows are open.
const MONDAY_MORNING: Timestamp = Timestamp::from_millis(1_795_428_000_000);

/// What the bot says when no commands are given: a conversation that shows every rule.
const SCRIPT: &[&str] = &[
    "status",
    "approve shop-1 as dana: my change is fine",
    "approve shop-1 as mallory: trust me",
    "approve shop-1 as rita: release notes checked",
    "approve shop-1 as ines: migration reviewed",
    "ship",
    "wait 30",
    "approve shop-1 as omar for sha256:9b4e1f0c2d3a5b6c7d8e9f00112233445566778899aabbccddeeff0011223344: scanned",
    "approve shop-1 as omar: scan is clean",
    "approve shop-2 as sam: ok",
    "reject shop-2 as omar: leaks a token in the logs",
    "ship",
    "status",
];

/// Where a held release is.
enum Held {
    Staged(Release<Staged, Delivery>),
    Approved(Release<Approved, Delivery>),
    Deployed(Release<Deployed, Delivery>),
}

/// The three changes the bot looks after: id, revision, author.
const CHANGES: [(&str, &str, &str); 3] = [
    ("shop-1", "4f2a9c1", "dana"),
    ("shop-2", "9b01d3e", "lee"),
    ("shop-3", "c77e0aa", "pat"),
];

fn main() -> Result<(), tollgate::Error> {
    let clock = ManualClock::new(MONDAY_MORNING);
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let store = match args.first().map(String::as_str) {
        Some(flag @ ("--journal" | "--postgres")) if args.len() > 1 => {
            let flag = flag.to_owned();
            let place = args.remove(1);
            args.remove(0);
            Some((flag, place))
        }
        _ => None,
    };
    let shared = Shared::default();
    let pipeline = match &store {
        Some((flag, place)) => {
            let key = if let Ok(secret) = std::env::var("TOLLGATE_BOT_KEY") {
                ChainKey::derive(secret.as_bytes())
            } else {
                println!("(TOLLGATE_BOT_KEY is not set: using a development key)");
                ChainKey::derive(b"release bot development key")
            };
            let journal: Box<dyn Journal> = if flag == "--journal" {
                let file = block_on(FileJournal::open(place, key))?;
                if let Some(torn) = &file.opened().torn {
                    println!(
                        "(the journal's torn tail was cut away: {} bytes)",
                        torn.bytes
                    );
                }
                Box::new(file)
            } else {
                shared.connect(place, key)?
            };
            pipeline(&clock, Some(journal))?
        }
        None => pipeline(&clock, None)?,
    };

    // Three changes from three people: restored from the journal where it has them,
    // otherwise staged now, waiting for approval.
    let mut held = BTreeMap::new();
    for (id, revision, author) in CHANGES {
        let slot = if known(&pipeline, id) {
            let restored = block_on(pipeline.restore(id))?;
            // Virtual time resumes where the journal left it.
            if restored.record().entered_at() > clock.now() {
                clock.set(restored.record().entered_at());
            }
            match restored.state() {
                StateName::Staged => Held::Staged(Release::try_from(restored)?),
                StateName::Approved => Held::Approved(Release::try_from(restored)?),
                StateName::Deployed => Held::Deployed(Release::try_from(restored)?),
                other => {
                    println!("  {id}: {other} in the journal; this bot only ships staged releases");
                    continue;
                }
            }
        } else {
            Held::Staged(block_on(stage(
                &pipeline,
                id,
                Revision::new(revision, author)?,
            ))?)
        };
        held.insert(id.to_owned(), slot);
    }
    println!(
        "release bot: {} releases staged; policy: {}\n",
        held.len(),
        pipeline
            .approval_policy()
            .rules()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );

    for command in commands(args) {
        println!("> {command}");
        if let Err(message) = run(&command, &pipeline, &clock, &mut held, &shared) {
            println!("  refused: {message}");
        }
        println!();
    }
    Ok(())
}

/// Whether the pipeline's journal holds release `id` at all.
fn known(pipeline: &Pipeline<Delivery>, id: &str) -> bool {
    block_on(pipeline.journal().read_key(id)).is_ok_and(|entries| !entries.is_empty())
}

/// The commands: the arguments, else the lines piped to standard input, else the script.
fn commands(args: Vec<String>) -> Vec<String> {
    if !args.is_empty() {
        return args;
    }
    let stdin = std::io::stdin();
    let piped: Vec<String> = if stdin.is_terminal() {
        Vec::new()
    } else {
        stdin
            .lock()
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect()
    };
    if piped.is_empty() {
        SCRIPT.iter().map(|&s| s.to_owned()).collect()
    } else {
        piped
    }
}

/// The delivery pipeline: two release managers and one security reviewer must approve, the
/// release must have soaked in staging for 30 minutes, and production is frozen at weekends.
fn pipeline(
    clock: &ManualClock,
    journal: Option<Box<dyn Journal>>,
) -> Result<Pipeline<Delivery>, tollgate::Error> {
    let builder = Pipeline::<Delivery>::builder("shop");
    let builder = match journal {
        Some(journal) => builder.journal(journal),
        None => builder,
    };
    builder
        .clock(clock.clone())
        .stages(common::stages())
        .approvals(
            ApprovalPolicy::new()
                .rule(
                    Rule::new("release-managers")
                        .group("release-managers")
                        .need(2),
                )?
                .rule(Rule::new("security").group("security"))?
                .valid_for(Duration::from_secs(8 * 3600)),
        )
        .directory(
            Groups::new()
                .group("release-managers", ["rita", "sam", "ines", "dana"])?
                .group("security", ["omar", "ines"])?,
        )
        .gate(Move::Approve, gate::soak(Duration::from_secs(30 * 60)))
        .environment_gate(
            "production",
            ChangeWindows::new("change-windows", "+01:00")?.deny_weekly(
                "weekend",
                "Fri 16:00",
                "Mon 08:00",
            )?,
        )?
        .build()
}

async fn stage(
    pipeline: &Pipeline<Delivery>,
    id: &str,
    revision: Revision,
) -> Result<Release<Staged, Delivery>, tollgate::Error> {
    let built = pipeline.start(id, revision)?.build(pipeline).await?;
    let artifact = built.artifact().clone();
    let tested = built.test(pipeline, &artifact).await?;
    Ok(tested.stage(pipeline, &artifact).await?)
}

fn run(
    command: &str,
    pipeline: &Pipeline<Delivery>,
    clock: &ManualClock,
    held: &mut BTreeMap<String, Held>,
    shared: &Shared,
) -> Result<(), String> {
    // `: ` starts the reason (a digest has a colon but no space after it).
    let (order, reason) = match command.split_once(": ") {
        Some((order, reason)) => (order, reason.trim()),
        None => (command, ""),
    };
    let words: Vec<&str> = order.split_whitespace().collect();
    match words.as_slice() {
        ["status"] => {
            for slot in held.values() {
                let record = match slot {
                    Held::Staged(release) => block_on(pipeline.explain(release.record())),
                    Held::Approved(release) => block_on(pipeline.explain(release.record())),
                    Held::Deployed(release) => block_on(pipeline.explain(release.record())),
                };
                println!("  {}", record.to_string().replace('\n', "\n  "));
            }
            Ok(())
        }
        ["wait", minutes] => {
            let minutes: u64 = minutes.parse().map_err(|_| "`wait` takes minutes")?;
            clock.advance(Duration::from_secs(minutes * 60));
            println!("  the clock reads {}", clock.now());
            Ok(())
        }
        ["approve" | "reject", release, "as", person, rest @ ..] => {
            let decision = if words[0] == "approve" {
                Decision::Approve
            } else {
                Decision::Reject
            };
            let Some(Held::Staged(staged)) = held.get(*release) else {
                return Err(format!("no release `{release}` is waiting for approval"));
            };
            match rest {
                [] => {
                    // Votes are facts in the pipeline's journal, stamped with its clock.
                    let progress = block_on(pipeline.vote(release, person, decision, reason));
                    println!("  {release}: {}", progress.map_err(|e| e.to_string())?);
                    Ok(())
                }
                ["for", digest] => {
                    // The person reviewed a specific artifact: their yes counts only for that
                    // digest. The request they vote on is the one the pipeline derives from
                    // the release itself, so a yes for another artifact cannot be cast.
                    let reviewed: Digest =
                        digest.parse().map_err(|e: ArtifactError| e.to_string())?;
                    let carried = &staged.artifact().digest;
                    if &reviewed != carried {
                        return Err(format!(
                            "{person} reviewed {}, but {release} carries {}: no vote recorded",
                            reviewed.short(),
                            carried.short()
                        ));
                    }
                    let progress = block_on(pipeline.vote(release, person, decision, reason));
                    println!("  {release}: {}", progress.map_err(|e| e.to_string())?);
                    Ok(())
                }
                _ => Err(format!("cannot read `{command}`")),
            }
        }
        ["ship"] => {
            ship(pipeline, held);
            Ok(())
        }
        ["await", release, count] => {
            let count: usize = count
                .parse()
                .map_err(|_| "`await` takes a number of votes")?;
            if !held.contains_key(*release) {
                return Err(format!("no release `{release}`"));
            }
            shared.await_votes(release, count)?;
            let ballot = block_on(pipeline.ballot(release)).map_err(|e| e.to_string())?;
            let votes: Vec<String> = ballot
                .votes()
                .iter()
                .map(|v| format!("{} ({:?}: {})", v.person, v.decision, v.reason))
                .collect();
            println!("  {release}: a vote arrived; votes: {}", votes.join(", "));
            Ok(())
        }
        _ => Err(format!("cannot read `{command}`")),
    }
}

/// Tries to approve and deploy every staged release; parks the ones that cannot go yet.
fn ship(pipeline: &Pipeline<Delivery>, held: &mut BTreeMap<String, Held>) {
    let ids: Vec<String> = held.keys().cloned().collect();
    for id in ids {
        let approved = match held.remove(&id) {
            Some(Held::Staged(staged)) => {
                let approval = match block_on(pipeline.issue(&id)) {
                    Ok(approval) => approval,
                    Err(error) => {
                        println!("  {id}: parked, {error}");
                        held.insert(id, Held::Staged(staged));
                        continue;
                    }
                };
                match block_on(staged.approve(pipeline, approval)) {
                    Ok(approved) => approved,
                    Err(refused) => {
                        println!("  {id}: parked, {}", refused.error());
                        held.insert(id, Held::Staged(refused.into_release()));
                        continue;
                    }
                }
            }
            // Approved earlier (by this run or one before it) but not deployed yet.
            Some(Held::Approved(approved)) => approved,
            Some(other) => {
                held.insert(id, other);
                continue;
            }
            None => continue,
        };
        let artifact = approved.artifact().clone();
        match block_on(approved.deploy(pipeline, &artifact)) {
            Ok(live) => {
                let record = live.record().approval().map(|a| {
                    a.signoffs
                        .iter()
                        .map(|s| format!("{} ({})", s.person, s.rules.join(", ")))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                println!(
                    "  {id}: deployed {} to production, approved by {}",
                    artifact.digest.short(),
                    record.unwrap_or_default()
                );
                held.insert(id, Held::Deployed(live));
            }
            Err(refused) => {
                // Approved but held at the production gate (a freeze): the approval is
                // spent, so the bot keeps the approved release and retries the deploy.
                println!("  {id}: approved, deployment held: {}", refused.error());
                held.insert(id, Held::Approved(refused.into_release()));
            }
        }
    }
}

/// The database the bot shares with its other copies (`--postgres`), when it has one.
#[derive(Default)]
struct Shared {
    #[cfg(feature = "postgres")]
    journal: std::cell::OnceCell<tollgate::journal::PgJournal>,
}

impl Shared {
    /// Connects to the database at `url`; the journal is the pipeline's too.
    #[cfg(feature = "postgres")]
    fn connect(&self, url: &str, key: ChainKey) -> Result<Box<dyn Journal>, tollgate::Error> {
        let journal = block_on(tollgate::journal::PgJournal::connect(url, key))?;
        let _ = self.journal.set(journal.clone());
        Ok(Box::new(journal))
    }

    #[cfg(not(feature = "postgres"))]
    #[allow(clippy::unused_self)] // The same signature as with the feature.
    fn connect(&self, _url: &str, _key: ChainKey) -> Result<Box<dyn Journal>, tollgate::Error> {
        eprintln!(
            "--postgres needs the `postgres` feature: cargo run --features postgres --example release_bot"
        );
        std::process::exit(2)
    }

    /// Parks until `release` has `count` votes, whichever copy of the bot takes them.
    #[cfg(feature = "postgres")]
    fn await_votes(&self, release: &str, count: usize) -> Result<(), String> {
        let journal = self.journal.get().ok_or("`await` needs --postgres")?;
        let key = tollgate::fact::votes_key(release);
        block_on(async {
            loop {
                let votes = journal.read_key(&key).await?;
                if votes.len() >= count {
                    return Ok(());
                }
                // Woken by the database when any copy appends a vote.
                journal
                    .wait_for(&key, votes.last().map_or(0, |v| v.seq))
                    .await?;
            }
        })
        .map_err(|e: tollgate::journal::JournalError| e.to_string())
    }

    #[cfg(not(feature = "postgres"))]
    #[allow(clippy::unused_self)] // The same signature as with the feature.
    fn await_votes(&self, _release: &str, _count: usize) -> Result<(), String> {
        Err("`await` needs --postgres (and the `postgres` feature)".to_owned())
    }
}
