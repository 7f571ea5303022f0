//! [`PgJournal`]: the journal in a Postgres table (feature `postgres`), so that several bot
//! processes, on several machines, share one truth. `schema.rs` holds the migrations and the
//! SQL, `writer.rs` the task that commits appends in groups.

mod schema;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row};

use crate::journal::{ChainHash, ChainKey, Entry, Journal, JournalError, Seq, Stored};

use schema::Sql;
use writer::WriteRequest;

/// The journal in a Postgres database: the same HMAC chain as every backend (checked by
/// the same [`verify`](crate::journal::verify)), in one table that every replica of a bot
/// appends to. Cheap to clone: clones share the connections.
///
/// - **Acknowledged when committed**: an append resolves only once the transaction holding
///   its entries has committed (durable as the server makes commits: keep its
///   `synchronous_commit` on, the default).
/// - **No gaps, no forks**: appends are serialized by a row lock (`SELECT … FOR UPDATE` on
///   the schema's one `head` row), taken before the last entry is read, so each entry is
///   linked to the committed head, and a reader (which sees committed rows only) never sees
///   a hole. Conditional appends ([`Entry::after`]) are checked under that lock, so they are
///   atomic across processes: of two replicas claiming the same move, one wins.
/// - **Group commit**: the appends of one process that arrive while a transaction runs are
///   committed together in the next (one multi-row `INSERT`), each keeping its own
///   condition and its own answer.
/// - **Restore by index**: [`read_key`](Journal::read_key) reads one release's rows through
///   the `(key, seq)` index.
/// - **Versioned schema**: [`connect`](PgJournal::connect) creates or migrates its schema in
///   one transaction (under an advisory lock, so replicas starting together migrate once),
///   and refuses a schema newer than this code with [`JournalError::Version`].
/// - **Wake-ups**: every append `NOTIFY`s the schema's channel; [`wait_for`](PgJournal::wait_for)
///   resolves when a key gets a new entry from any replica (and re-reads at least every
///   [`poll`](PgJournalOptions::poll), should a notification be lost to a reconnect).
///
/// # Runtime
///
/// tokio-postgres needs tokio's I/O for its connections, and tollgate assumes no runtime of
/// the host's. So the journal starts a thread of its own running a current-thread tokio
/// runtime, which owns the connections (one for appends, one for reads, one listening for
/// notifications); every method sends its work there and awaits the answer. The journal
/// therefore works under any executor (tokio, async-std, smol, `futures::executor::block_on`)
/// and never blocks the caller's thread. The thread stops when the last clone is dropped.
///
/// # Failures
///
/// A lost connection is made again on the next call (a read, or an append that failed before
/// its commit was sent, is tried once more on a new connection right away). Otherwise the
/// call fails with [`JournalError::Database`]; nothing it wrote was acknowledged. If the
/// connection was lost while the commit was under way (`in_doubt`), the append may have been
/// written: read its key before writing it again (a conditional append tried again is simply
/// refused with [`JournalError::Conflict`] if the first one went through).
///
/// # The table
///
/// ```text
/// <schema>.journal(seq bigint PRIMARY KEY, key bytea, key_prev bigint, payload bytea,
///                  prev bytea, hash bytea)          index journal_key_seq (key, seq)
/// <schema>.head(one boolean PRIMARY KEY, seq bigint)  the row appends lock
/// <schema>.schema_version(version integer)
/// ```
///
/// ```no_run
/// use futures::executor::block_on;
/// use tollgate::journal::{ChainKey, Entry, Journal, PgJournal, verify};
///
/// block_on(async {
///     let key = ChainKey::derive(b"the host's secret");
///     let journal = PgJournal::connect("postgresql://bot@db.internal/releases", key).await?;
///     journal.append(vec![Entry::new("r1", b"built".to_vec()).after(0)]).await?;
///     assert_eq!(journal.read_key("r1").await?[0].payload, b"built");
///     verify(&journal).await?;
///     Ok::<_, tollgate::journal::JournalError>(())
/// })?;
/// # Ok::<_, tollgate::journal::JournalError>(())
/// ```
#[derive(Clone)]
pub struct PgJournal {
    inner: Arc<Inner>,
}

/// What the clones of a [`PgJournal`] share.
struct Inner {
    key: ChainKey,
    database: String,
    options: PgJournalOptions,
    runtime: tokio::runtime::Handle,
    writer: mpsc::UnboundedSender<WriteRequest>,
    reader: Arc<Reader>,
    wake: Arc<watch::Sender<u64>>,
    listening: AtomicBool,
    /// Dropped with the last clone: the runtime's thread then stops.
    _stop: oneshot::Sender<()>,
}

/// How a [`PgJournal`] is set up.
#[derive(Debug, Clone)]
pub struct PgJournalOptions {
    schema: String,
    max_entry_bytes: usize,
    poll: Duration,
    max_group: usize,
}

impl Default for PgJournalOptions {
    fn default() -> Self {
        PgJournalOptions {
            schema: "tollgate".to_owned(),
            max_entry_bytes: 16 << 20,
            poll: Duration::from_secs(5),
            max_group: 4096,
        }
    }
}

impl PgJournalOptions {
    /// The Postgres schema the journal's tables live in (default `tollgate`): 1 to 40
    /// lower-case ASCII letters, digits and `_`, starting with a letter. Several journals can
    /// share a database under different schemas.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The largest payload an entry may have (default 16 MiB); larger ones are refused with
    /// [`JournalError::TooLarge`] before anything is written.
    #[must_use]
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// The longest [`PgJournal::wait_for`] goes without reading the key again when no
    /// notification arrives (default 5 s).
    #[must_use]
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// The most entries committed in one transaction (default 4096).
    #[must_use]
    pub fn max_group(mut self, entries: usize) -> Self {
        self.max_group = entries.max(1);
        self
    }
}

impl PgJournal {
    /// The schema version this code writes: a database whose schema is newer is refused.
    pub const SCHEMA_VERSION: u32 = schema::VERSION;

    /// Connects to the database at `url` (a `postgresql://` URL or a `key=value` string, as
    /// libpq reads them; no TLS) with default options, chained under `key`. See
    /// [`connect_with`](PgJournal::connect_with).
    pub async fn connect(url: &str, key: ChainKey) -> Result<Self, JournalError> {
        Self::connect_with(url, key, PgJournalOptions::default()).await
    }

    /// Connects to the database at `url`, creates the journal's schema or migrates it to
    /// [`SCHEMA_VERSION`](PgJournal::SCHEMA_VERSION) in one transaction, and starts the
    /// journal's thread.
    ///
    /// Fails with [`JournalError::Database`] if the URL or the schema name is malformed or
    /// the database cannot be reached, and with [`JournalError::Version`] if the schema was
    /// written by a newer tollgate (nothing is changed then).
    pub async fn connect_with(
        url: &str,
        key: ChainKey,
        options: PgJournalOptions,
    ) -> Result<Self, JournalError> {
        let invalid = |database: &str, reason: String| JournalError::Database {
            database: database.to_owned(),
            reason,
            in_doubt: false,
        };
        let config: Config = url
            .parse()
            .map_err(|e| invalid("(unread URL)", format!("cannot read the URL: {e}")))?;
        let database = format!(
            "postgres database `{}` schema `{}`",
            config.get_dbname().unwrap_or("(default)"),
            crate::id::quoted(&options.schema)
        );
        check_schema_name(&options.schema).map_err(|reason| invalid(&database, reason))?;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tollgate-postgres".to_owned())
            .spawn(move || runtime.block_on(async move { drop(stopped.await) }))?;

        let connector = Arc::new(Connector {
            config,
            database: database.clone(),
        });
        let sql = Arc::new(Sql::new(&options.schema));
        let (writer, requests) = mpsc::unbounded_channel();
        let (wake, _) = watch::channel(0);
        let opening = {
            let (connector, sql, key) = (connector.clone(), sql.clone(), key.clone());
            let (schema, max_group) = (options.schema.clone(), options.max_group);
            spawn(&handle, async move {
                let mut client = connector.connect().await?;
                schema::migrate(&mut client, &schema, &connector.database).await?;
                let writer = writer::Writer {
                    connector,
                    sql,
                    key,
                    max_group,
                };
                tokio::spawn(writer.run(client, requests));
                Ok(())
            })
        };
        opening.await?;
        Ok(PgJournal {
            inner: Arc::new(Inner {
                key,
                database,
                options,
                runtime: handle,
                writer,
                reader: Arc::new(Reader {
                    connector,
                    sql,
                    client: tokio::sync::Mutex::new(None),
                }),
                wake: Arc::new(wake),
                listening: AtomicBool::new(false),
                _stop: stop,
            }),
        })
    }

    /// The database and schema, as errors name them.
    #[must_use]
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// Resolves with the last sequence number filed under `key` once it is past `after`:
    /// when any replica appends to `key` (a vote under
    /// [`votes_key`](crate::fact::votes_key), a move), the replica waiting here wakes, by
    /// Postgres's `LISTEN`/`NOTIFY`, and reads the key again at least every
    /// [`poll`](PgJournalOptions::poll) in case a notification was lost. Dropping the future
    /// stops the wait.
    ///
    /// ```no_run
    /// use futures::executor::block_on;
    /// use tollgate::journal::{ChainKey, Journal, PgJournal};
    ///
    /// block_on(async {
    ///     let key = ChainKey::derive(b"the host's secret");
    ///     let journal = PgJournal::connect("postgresql://bot@db.internal/releases", key).await?;
    ///     let votes = tollgate::fact::votes_key("shop-1");
    ///     let seen = journal.read_key(&votes).await?.last().map_or(0, |s| s.seq);
    ///     let newer = journal.wait_for(&votes, seen).await?; // another replica took a vote
    ///     assert!(newer > seen);
    ///     Ok::<_, tollgate::journal::JournalError>(())
    /// })?;
    /// # Ok::<_, tollgate::journal::JournalError>(())
    /// ```
    pub async fn wait_for(&self, key: &str, after: Seq) -> Result<Seq, JournalError> {
        self.listen();
        let (reader, wake, poll) = (
            self.inner.reader.clone(),
            self.inner.wake.clone(),
            self.inner.options.poll,
        );
        let key = key.as_bytes().to_vec();
        spawn(&self.inner.runtime, async move {
            let mut woken = wake.subscribe();
            loop {
                woken.borrow_and_update();
                let last = reader.last_of_key(&key).await?;
                if last > after {
                    return Ok(last);
                }
                // A notification since the read marks `woken` changed: none is missed.
                let _ = tokio::time::timeout(poll, woken.changed()).await;
            }
        })
        .await
    }

    /// Starts the task that listens for the schema's notifications, once.
    fn listen(&self) {
        if self.inner.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let (connector, wake) = (self.inner.reader.connector.clone(), self.inner.wake.clone());
        let channel = self.inner.reader.sql.channel.clone();
        self.inner.runtime.spawn(async move {
            loop {
                if let Ok((client, mut connection)) = connector.config.connect(NoTls).await {
                    let notes = wake.clone();
                    let driver = tokio::spawn(async move {
                        let mut messages =
                            futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                        while let Some(Ok(message)) = messages.next().await {
                            if let AsyncMessage::Notification(_) = message {
                                notes.send_modify(|n| *n += 1);
                            }
                        }
                    });
                    if client
                        .batch_execute(&format!("LISTEN \"{channel}\""))
                        .await
                        .is_ok()
                    {
                        // Anything appended before the LISTEN took is read again now.
                        wake.send_modify(|n| *n += 1);
                        let _ = driver.await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

impl fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgJournal")
            .field("database", &self.inner.database)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Journal for PgJournal {
    async fn append(&self, entries: Vec<Entry>) -> Result<Seq, JournalError> {
        let limit = self.inner.options.max_entry_bytes;
        if let Some(size) = entries
            .iter()
            .map(|e| e.payload.len() + e.key.len())
            .find(|&size| size > limit)
        {
            return Err(JournalError::TooLarge { size, limit });
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .writer
            .send(WriteRequest { entries, reply })
            .map_err(|_| JournalError::Closed)?;
        // Dropping this future does not withdraw the append (as with every backend).
        answer.await.map_err(|_| JournalError::Closed)?
    }

    async fn read(&self, from: Seq, limit: usize) -> Result<Vec<Stored>, JournalError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let reader = self.inner.reader.clone();
        spawn(&self.inner.runtime, async move {
            // Past the last possible entry there is nothing to read.
            let from = i64::try_from(from.max(1)).unwrap_or(i64::MAX);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = reader.query(&reader.sql.read, &[&from, &limit]).await?;
            rows.iter()
                .map(|row| stored(row, &reader.database()))
                .collect()
        })
        .await
    }

    async fn read_key(&self, key: &str) -> Result<Vec<Stored>, JournalError> {
        let reader = self.inner.reader.clone();
        let key = key.as_bytes().to_vec();
        spawn(&self.inner.runtime, async move {
            let rows = reader.query(&reader.sql.read_key, &[&key]).await?;
            rows.iter()
                .map(|row| stored(row, &reader.database()))
                .collect()
        })
        .await
    }

    async fn head(&self) -> Result<(Seq, ChainHash), JournalError> {
        let reader = self.inner.reader.clone();
        spawn(&self.inner.runtime, async move {
            let rows = reader.query(&reader.sql.last_entry, &[]).await?;
            match rows.first() {
                None => Ok((0, ChainHash::GENESIS)),
                Some(row) => head_of(row, &reader.database()),
            }
        })
        .await
    }

    fn key(&self) -> &ChainKey {
        &self.inner.key
    }
}

/// Makes connections to the database, each driven by a task on the journal's runtime.
#[derive(Debug)]
struct Connector {
    config: Config,
    database: String,
}

impl Connector {
    async fn connect(&self) -> Result<Client, JournalError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| describe_error(&self.database, &e, false))?;
        tokio::spawn(async move { drop(connection.await) });
        Ok(client)
    }
}

/// The connection reads share (tokio-postgres pipelines concurrent queries on it).
#[derive(Debug)]
struct Reader {
    connector: Arc<Connector>,
    sql: Arc<Sql>,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Reader {
    fn database(&self) -> String {
        self.connector.database.clone()
    }

    async fn client(&self) -> Result<Arc<Client>, JournalError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(self.connector.connect().await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs a read, once more on a new connection if the connection was lost.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, JournalError> {
        let mut tried = false;
        loop {
            let client = self.client().await?;
            match client.query(sql, params).await {
                Ok(rows) => return Ok(rows),
                Err(e) if lost(&e) && !tried => {
                    tried = true;
                    *self.client.lock().await = None;
                }
                Err(e) => return Err(describe_error(&self.connector.database, &e, false)),
            }
        }
    }

    async fn last_of_key(&self, key: &[u8]) -> Result<Seq, JournalError> {
        let rows = self.query(&self.sql.last_of_key, &[&key]).await?;
        let last: i64 = rows.first().map_or(0, |row| row.get(0));
        Ok(Seq::try_from(last).unwrap_or(0))
    }
}

/// Whether `error` means the connection is gone (closed, reset, or the server shutting
/// down), rather than the database refusing the statement.
fn lost(error: &tokio_postgres::Error) -> bool {
    error.is_closed()
        || error.code().map_or(error.as_db_error().is_none(), |code| {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57")
        })
}

/// [`JournalError::Database`] for `error`.
fn describe_error(database: &str, error: &tokio_postgres::Error, in_doubt: bool) -> JournalError {
    let reason = if let Some(db) = error.as_db_error() {
        format!("{} (SQLSTATE {})", db.message(), db.code().code())
    } else {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            reason = format!("{reason}: {cause}");
            source = cause.source();
        }
        reason
    };
    JournalError::Database {
        database: database.to_owned(),
        reason,
        in_doubt,
    }
}

/// Why `schema` cannot name the journal's schema, if it cannot.
fn check_schema_name(schema: &str) -> Result<(), String> {
    let first_ok = schema.starts_with(|c: char| c.is_ascii_lowercase());
    let rest_ok = schema
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 40 {
        Ok(())
    } else {
        Err(format!(
            "the schema name `{}` is not 1 to 40 lower-case ASCII letters, digits and `_` starting with a letter",
            crate::id::quoted(schema)
        ))
    }
}

/// A sequence number as Postgres's `bigint`.
fn to_sql(seq: Seq) -> Result<i64, JournalError> {
    i64::try_from(seq).map_err(|_| JournalError::Corrupt {
        seq,
        offset: 0,
        reason: "its sequence number is past Postgres's bigint".to_owned(),
    })
}

/// A row of the journal table, checked for the shape every entry has (the chain is
/// `verify`'s to check).
fn stored(row: &Row, database: &str) -> Result<Stored, JournalError> {
    let seq: i64 = column(row, 0, database, -1)?;
    let at = Seq::try_from(seq).unwrap_or(0);
    let corrupt = |reason: String| JournalError::Corrupt {
        seq: at,
        offset: 0,
        reason,
    };
    if seq <= 0 {
        return Err(corrupt(format!(
            "its row in {database} has sequence number {seq}"
        )));
    }
    let key: Vec<u8> = column(row, 1, database, seq)?;
    let key_prev: i64 = column(row, 2, database, seq)?;
    Ok(Stored {
        seq: at,
        key: String::from_utf8(key).map_err(|_| corrupt("its key is not UTF-8".to_owned()))?,
        key_prev: Seq::try_from(key_prev)
            .map_err(|_| corrupt(format!("its previous entry of the key is {key_prev}")))?,
        payload: column(row, 3, database, seq)?,
        prev: hash(column(row, 4, database, seq)?)
            .map_err(|n| corrupt(format!("`prev` has {n} bytes")))?,
        hash: hash(column(row, 5, database, seq)?)
            .map_err(|n| corrupt(format!("`hash` has {n} bytes")))?,
        offset: 0,
    })
}

/// The `(seq, hash)` of a row.
fn head_of(row: &Row, database: &str) -> Result<(Seq, ChainHash), JournalError> {
    let seq: i64 = column(row, 0, database, -1)?;
    let at = Seq::try_from(seq).unwrap_or(0);
    let h = hash(column(row, 1, database, seq)?).map_err(|n| JournalError::Corrupt {
        seq: at,
        offset: 0,
        reason: format!("`hash` has {n} bytes"),
    })?;
    Ok((at, h))
}

fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    database: &str,
    seq: i64,
) -> Result<T, JournalError> {
    row.try_get(index).map_err(|e| JournalError::Corrupt {
        seq: Seq::try_from(seq).unwrap_or(0),
        offset: 0,
        reason: format!("its row in {database} cannot be read: {e}"),
    })
}

/// A 32-byte MAC, or the length found.
fn hash(bytes: Vec<u8>) -> Result<ChainHash, usize> {
    let len = bytes.len();
    <[u8; 32]>::try_from(bytes).map(ChainHash).map_err(|_| len)
}

/// Runs `work` on the journal's runtime and waits for it from any executor; dropping the
/// returned future stops the work.
fn spawn<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl Future<Output = Result<T, JournalError>> + Send + 'static,
) -> Spawned<T> {
    Spawned(runtime.spawn(work))
}

/// A task of the journal's runtime, aborted when dropped.
struct Spawned<T>(tokio::task::JoinHandle<Result<T, JournalError>>);

impl<T> Future for Spawned<T> {
    type Output = Result<T, JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or(Err(JournalError::Closed)))
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The last sequence number of each key, as read under the head's lock.
type LastOfKey = HashMap<String, Seq>;
