//! The writer task: takes the appends waiting, commits them as one transaction under the
//! head's row lock, and answers each.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

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
    pub async fn run(
        self,
        mut client: Option<Client>,
        mut requests: mpsc::UnboundedReceiver<WriteRequest>,
    ) {
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
        client: &mut Option<Client>,
        appends: &[&[Entry]],
    ) -> Result<Vec<Result<Seq, JournalError>>, JournalError> {
        let database = &self.connector.database;
        let mut tried = false;
        loop {
            let connection = match client.take() {
                Some(c) if !c.is_closed() => c,
                _ => self.connector.connect().await?,
            };
            let connection = client.insert(connection);
            match self.transaction(connection, appends).await {
                Ok(answers) => return Ok(answers),
                Err(Failed::Journal(error)) => return Err(error),
                Err(Failed::Db(error, committing)) => {
                    let gone = lost(&error);
                    if gone {
                        *client = None;
                    }
                    if gone && !committing && !tried {
                        tried = true;
                        continue;
                    }
                    return Err(describe_error(database, &error, gone && committing));
                }
            }
        }
    }

    /// One transaction: lock the head, read it and the keys' last entries, link every append
    /// whose condition holds, insert them all, move the head, notify, commit.
    async fn transaction(
        &self,
        client: &mut Client,
        appends: &[&[Entry]],
    ) -> Result<Vec<Result<Seq, JournalError>>, Failed> {
        let db = |e| Failed::Db(e, false);
        let sql = &*self.sql;
        let database = &self.connector.database;
        let tx = client.transaction().await.map_err(db)?;
        let keys: BTreeSet<&[u8]> = appends
            .iter()
            .flat_map(|a| a.iter().map(|e| e.key.as_bytes()))
            .collect();
        let keys: Vec<&[u8]> = keys.into_iter().collect();
        // Sent together (tokio-postgres pipelines them) and run in order by the server: the
        // lock first, so the two reads after it see the head every other writer committed.
        let (locked, last, key_rows) = futures::future::try_join3(
            tx.query_one(&sql.lock_head, &[]),
            tx.query_opt(&sql.last_entry, &[]),
            tx.query(&sql.last_of_keys, &[&keys]),
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
        if !columns.seq.is_empty() {
            let c = &columns;
            let head = to_sql(head)?;
            futures::future::try_join3(
                tx.execute(
                    &sql.insert,
                    &[&c.seq, &c.key, &c.key_prev, &c.payload, &c.prev, &c.hash],
                ),
                tx.execute(&sql.set_head, &[&head]),
                tx.execute(&sql.notify, &[&sql.channel]),
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(|e| Failed::Db(e, true))?;
        Ok(answers)
    }
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
