//! The writer task: takes the appends waiting, commits them as one transaction under the
//! head's row lock, and answers each.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Statement};

use crate::journal::{ChainHash, ChainKey, Entry, JournalError, Seq, link_all};

use super::schema::Sql;
use super::{Connector, LastOfKey, describe_error, head_of, lost, to_sql};

/// One append waiting for the writer.
pub(super) struct WriteRequest {
    pub entries: Vec<Entry>,
    pub reply: oneshot::Sender<Result<Seq, JournalError>>,
}

/// What the writer task needs.
pub(super) struct Writer {
    pub connector: Arc<Connector>,
    pub sql: Arc<Sql>,
    pub key: ChainKey,
    pub max_group: usize,
}

/// Why a transaction failed.
enum Failed {
    /// The database failed; `committing` when the commit had been sent.
    Db(tokio_postgres::Error, bool),
    /// What the journal found is wrong.
    Journal(JournalError),
}

impl From<JournalError> for Failed {
    fn from(error: JournalError) -> Self {
        Failed::Journal(error)
    }
}

impl Writer {
    /// Commits the appends as they come, every append waiting in one transaction, until every
    /// sender is gone.
    pub async fn run(self, client: Client, mut requests: mpsc::UnboundedReceiver<WriteRequest>) {
        // A failure here shows again, and is reported, at the first append.
        let mut client = self.prepare(client).await.ok();
        while let Some(first) = requests.recv().await {
            let mut group = vec![first];
            let mut entries = group[0].entries.len();
            while entries < self.max_group {
                match requests.try_recv() {
                    Ok(next) => {
                        entries += next.entries.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            let appends: Vec<&[Entry]> = group.iter().map(|r| r.entries.as_slice()).collect();
            match self.commit(&mut client, &appends).await {
                Ok(answers) => {
                    for (request, answer) in group.into_iter().zip(answers) {
                        let _ = request.reply.send(answer);
                    }
                }
                Err(error) => {
                    for request in group {
                        let _ = request.reply.send(Err(same(&error)));
                    }
                }
            }
        }
    }

    /// Commits `appends` in one transaction, on a new connection if there is none; an
    /// attempt whose connection was lost before the commit was sent is made once more.
    async fn commit(
        &self,
        client: &mut Option<Prepared>,
        appends: &[&[Entry]],
    ) -> Result<Vec<Result<Seq, JournalError>>, JournalError> {
        let database = &self.connector.database;
        let mut tried = false;
        loop {
            let connection = match client.take() {
                Some(c) if !c.client.is_closed() => c,
                _ => {
                    let fresh = self.connector.connect().await?;
                    self.prepare(fresh)
                        .await
                        .map_err(|e| describe_error(database, &e, false))?
                }
            };
            let connection = client.insert(connection);
            match self.transaction(connection, appends).await {
                Ok(answers) => return Ok(answers),
                Err(Failed::Journal(error)) => {
                    // The transaction is still open: end it, or start afresh.
                    if connection.client.batch_execute("ROLLBACK").await.is_err() {
                        *client = None;
                    }
                    return Err(error);
                }
                Err(Failed::Db(error, committing)) => {
                    let gone = lost(&error);
                    // Whatever state the failed transaction left it in, a new connection
                    // starts clean.
                    *client = None;
                    if gone && !committing && !tried {
                        tried = true;
                        continue;
                    }
                    return Err(describe_error(database, &error, gone && committing));
                }
            }
        }
    }

    /// The connection with the writer's statements prepared on it (once, not per append).
    async fn prepare(&self, client: Client) -> Result<Prepared, tokio_postgres::Error> {
        let sql = &*self.sql;
        let (lock_head, last_entry, last_of_keys) = futures::future::try_join3(
            client.prepare(&sql.lock_head),
            client.prepare(&sql.last_entry),
            client.prepare(&sql.last_of_keys),
        )
        .await?;
        let (insert, set_head, notify) = futures::future::try_join3(
            client.prepare(&sql.insert),
            client.prepare(&sql.set_head),
            client.prepare(&sql.notify),
        )
        .await?;
        Ok(Prepared {
            client,
            lock_head,
            last_entry,
            last_of_keys,
            insert,
            set_head,
            notify,
        })
    }

    /// One transaction in two round trips: `BEGIN`, lock the head, read it and the keys'
    /// last entries (sent together; the server runs them in order, so the reads see the head
    /// every other writer committed); link every append whose condition holds; then insert
    /// them all, move the head, notify and `COMMIT` (sent together: if one fails, the
    /// transaction is aborted and the `COMMIT` rolls it back).
    async fn transaction(
        &self,
        p: &Prepared,
        appends: &[&[Entry]],
    ) -> Result<Vec<Result<Seq, JournalError>>, Failed> {
        let db = |e| Failed::Db(e, false);
        let sql = &*self.sql;
        let database = &self.connector.database;
        let client = &p.client;
        let keys: BTreeSet<&[u8]> = appends
            .iter()
            .flat_map(|a| a.iter().map(|e| e.key.as_bytes()))
            .collect();
        let keys: Vec<&[u8]> = keys.into_iter().collect();
        let (((), locked), (last, key_rows)) = futures::future::try_join(
            futures::future::try_join(
                client.batch_execute("BEGIN"),
                client.query_one(&p.lock_head, &[]),
            ),
            futures::future::try_join(
                client.query_opt(&p.last_entry, &[]),
                client.query(&p.last_of_keys, &[&keys]),
            ),
        )
        .await
        .map_err(db)?;
        let locked: i64 = locked.get(0);
        let (mut head, mut head_hash) = match last {
            Some(row) => head_of(&row, database)?,
            None => (0, ChainHash::GENESIS),
        };
        if Seq::try_from(locked).ok() != Some(head) {
            return Err(Failed::Journal(JournalError::Corrupt {
                seq: head,
                offset: 0,
                reason: format!(
                    "{database}'s head row names entry {locked} as the last, but the last is {head} (rows added or removed by hand)"
                ),
            }));
        }
        let mut last_of_key = LastOfKey::new();
        for row in key_rows {
            let key: Vec<u8> = row.get(0);
            let last: i64 = row.get(1);
            last_of_key.insert(
                String::from_utf8_lossy(&key).into_owned(),
                Seq::try_from(last).unwrap_or(0),
            );
        }

        let mut columns = Columns::default();
        let mut answers = Vec::with_capacity(appends.len());
        for append in appends {
            match link_all(
                &self.key,
                head,
                head_hash,
                &mut last_of_key,
                append.to_vec(),
            ) {
                Ok(stored) => {
                    for s in stored {
                        head = s.seq;
                        head_hash = s.hash;
                        columns.seq.push(to_sql(s.seq)?);
                        columns.key.push(s.key.into_bytes());
                        columns.key_prev.push(to_sql(s.key_prev)?);
                        columns.payload.push(s.payload);
                        columns.prev.push(s.prev.0.to_vec());
                        columns.hash.push(s.hash.0.to_vec());
                    }
                    answers.push(Ok(head));
                }
                Err(refused) => answers.push(Err(refused)),
            }
        }
        let committing = |e| Failed::Db(e, true);
        if columns.seq.is_empty() {
            client.batch_execute("COMMIT").await.map_err(committing)?;
        } else {
            let c = &columns;
            let head = to_sql(head)?;
            futures::future::try_join4(
                client.execute(
                    &p.insert,
                    &[&c.seq, &c.key, &c.key_prev, &c.payload, &c.prev, &c.hash],
                ),
                client.execute(&p.set_head, &[&head]),
                client.execute(&p.notify, &[&sql.channel]),
                client.batch_execute("COMMIT"),
            )
            .await
            .map_err(committing)?;
        }
        Ok(answers)
    }
}

/// The writer's connection and its prepared statements.
pub(super) struct Prepared {
    client: Client,
    lock_head: Statement,
    last_entry: Statement,
    last_of_keys: Statement,
    insert: Statement,
    set_head: Statement,
    notify: Statement,
}

/// The rows of one transaction, column by column (for one `INSERT … SELECT unnest(…)`).
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    key: Vec<Vec<u8>>,
    key_prev: Vec<i64>,
    payload: Vec<Vec<u8>>,
    prev: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}

/// The same error again, for every append of a failed group (errors are not `Clone`).
fn same(error: &JournalError) -> JournalError {
    match error {
        JournalError::Database {
            database,
            reason,
            in_doubt,
        } => JournalError::Database {
            database: database.clone(),
            reason: reason.clone(),
            in_doubt: *in_doubt,
        },
        JournalError::Corrupt {
            seq,
            offset,
            reason,
        } => JournalError::Corrupt {
            seq: *seq,
            offset: *offset,
            reason: reason.clone(),
        },
        JournalError::Closed => JournalError::Closed,
        other => JournalError::Io(std::io::Error::other(other.to_string())),
    }
}
