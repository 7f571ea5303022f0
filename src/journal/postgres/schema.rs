//! The Postgres journal's schema: its versioned migrations, applied at connect in one
//! transaction, and the SQL it runs, written once per schema name.

use tokio_postgres::Client;

use crate::journal::JournalError;

use super::describe_error;

/// The schema version this code writes and reads: the number of [`MIGRATIONS`].
pub(super) const VERSION: u32 = MIGRATIONS.len() as u32;

/// Migration `n` (from 1) takes the schema from version `n - 1` to `n`. `{s}` is the schema's
/// quoted name. Append new ones; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the entries, their key index, and the head row appends lock.
    "CREATE TABLE {s}.journal (
         seq      bigint PRIMARY KEY CHECK (seq > 0),
         key      bytea  NOT NULL,
         key_prev bigint NOT NULL CHECK (key_prev >= 0),
         payload  bytea  NOT NULL,
         prev     bytea  NOT NULL,
         hash     bytea  NOT NULL
     );
     CREATE INDEX journal_key_seq ON {s}.journal (key, seq);
     CREATE TABLE {s}.head (
         one boolean PRIMARY KEY DEFAULT true CHECK (one),
         seq bigint NOT NULL
     );
     INSERT INTO {s}.head (one, seq) VALUES (true, 0);",
];

/// The statements the journal runs, with its schema's name in them.
#[derive(Debug)]
pub(super) struct Sql {
    /// The `LISTEN`/`NOTIFY` channel appends wake waiters on.
    pub channel: String,
    pub lock_head: String,
    pub last_entry: String,
    pub last_of_keys: String,
    pub insert: String,
    pub set_head: String,
    pub notify: String,
    pub read: String,
    pub read_key: String,
    pub last_of_key: String,
}

impl Sql {
    pub fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let columns = "seq, key, key_prev, payload, prev, hash";
        Sql {
            channel: format!("tollgate_{schema}"),
            lock_head: format!("SELECT seq FROM {s}.head WHERE one FOR UPDATE"),
            last_entry: format!("SELECT seq, hash FROM {s}.journal ORDER BY seq DESC LIMIT 1"),
            last_of_keys: format!(
                "SELECT k, coalesce((SELECT max(seq) FROM {s}.journal WHERE key = k), 0)
                 FROM unnest($1::bytea[]) AS k"
            ),
            insert: format!(
                "INSERT INTO {s}.journal ({columns})
                 SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[], $4::bytea[],
                                      $5::bytea[], $6::bytea[])"
            ),
            set_head: format!("UPDATE {s}.head SET seq = $1 WHERE one"),
            notify: "SELECT pg_notify($1, '')".to_owned(),
            read: format!(
                "SELECT {columns} FROM {s}.journal WHERE seq >= $1 ORDER BY seq LIMIT $2"
            ),
            read_key: format!("SELECT {columns} FROM {s}.journal WHERE key = $1 ORDER BY seq"),
            last_of_key: format!("SELECT coalesce(max(seq), 0) FROM {s}.journal WHERE key = $1"),
        }
    }
}

/// Brings the schema `schema` up to [`VERSION`] in one transaction, under an advisory lock so
/// that replicas starting together migrate once; refuses a schema newer than this code
/// ([`JournalError::Version`]) and changes nothing then.
pub(super) async fn migrate(
    client: &mut Client,
    schema: &str,
    database: &str,
) -> Result<u32, JournalError> {
    let db = |e| describe_error(database, &e, false);
    let s = format!("\"{schema}\"");
    let tx = client.transaction().await.map_err(db)?;
    // One lock for every tollgate schema of the database: migrations are rare and short.
    tx.execute("SELECT pg_advisory_xact_lock(7305093112417320559)", &[])
        .await
        .map_err(db)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL);"
    ))
    .await
    .map_err(db)?;
    let found: Option<i32> = tx
        .query_opt(&format!("SELECT version FROM {s}.schema_version"), &[])
        .await
        .map_err(db)?
        .map(|row| row.get(0));
    let found = if let Some(v) = found {
        u32::try_from(v).map_err(|_| JournalError::Corrupt {
            seq: 0,
            offset: 0,
            reason: format!("the schema version of {database} is {v}"),
        })?
    } else {
        tx.execute(
            &format!("INSERT INTO {s}.schema_version (version) VALUES (0)"),
            &[],
        )
        .await
        .map_err(db)?;
        0
    };
    if found > VERSION {
        // Dropping the transaction rolls it back: nothing was changed.
        return Err(JournalError::Version {
            path: database.to_owned(),
            found,
            supported: VERSION,
        });
    }
    for (n, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(usize::MAX))
    {
        tx.batch_execute(&migration.replace("{s}", &s))
            .await
            .map_err(db)?;
        tx.execute(
            &format!("UPDATE {s}.schema_version SET version = $1"),
            &[&(i32::try_from(n + 1).unwrap_or(i32::MAX))],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(found)
}
