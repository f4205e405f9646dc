//! The embedded migrations of the two parts, `directory` and `store`, each versioned
//! in a row of `owner_access_schema`, applied on connect.
//!
//! Two processes connecting at once both run [`migrate`]: each takes a
//! transaction-level advisory lock first, so the second waits for the first's commit,
//! then finds the version already current and changes nothing.

use deadpool_postgres::Object;

use crate::domain::DELIVERED_KEY_VERSION;

use tokio_postgres::error::SqlState;

use crate::repository::RepositoryError;

use super::connection::{Fail, Res};

/// One part of the schema: its name in `owner_access_schema` and its migrations
/// (migration `i` takes the part from version `i` to `i + 1`).
pub(super) struct Part {
    pub(super) name: &'static str,
    migrations: &'static [&'static str],
}

/// The crate's own communities and owners.
pub(super) const DIRECTORY: Part = Part {
    name: "directory",
    migrations: &[include_str!("directory_0001.sql")],
};

/// The workflow's state.
pub(super) const STORE: Part = Part {
    name: "store",
    migrations: &[
        include_str!("store_0001.sql"),
        include_str!("store_0002.sql"),
    ],
};

impl Part {
    /// The version this build writes and reads.
    pub(super) fn version(&self) -> i32 {
        i32::try_from(self.migrations.len()).expect("a few migrations")
    }
}

/// The [`DELIVERED_KEY_VERSION`] that `owner_access_owners.email_key` holds at the
/// directory's current version. A new key version needs a migration that computes
/// every stored key again (in Rust: UTS #46 cannot be done in SQL); the build fails
/// until then.
const EMAIL_KEY_VERSION: u32 = 1;
const _: () = assert!(
    EMAIL_KEY_VERSION == DELIVERED_KEY_VERSION,
    "a new delivered_key version needs a directory migration that re-keys owner_access_owners"
);

/// The advisory lock key every migration takes ("OAcc" and "migr" as two i32s).
const MIGRATION_LOCK: (i32, i32) = (0x4F41_6363, 0x6D69_6772);

/// Brings `parts` to this build's versions, in one transaction.
///
/// A part at a version newer than this build knows is refused as
/// [`Corrupt`](RepositoryError::Corrupt) (an older build must not write a newer
/// schema); a name the migration needs that another object holds (a host's table
/// called `owner_access_owners`, say) as [`NameTaken`](RepositoryError::NameTaken).
/// Either way nothing changes.
pub(super) async fn migrate(client: &mut Object, store: &str, parts: &[&Part]) -> Res<()> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS owner_access_schema (
             part    TEXT PRIMARY KEY,
             version INT NOT NULL CHECK (version >= 0)
         )",
    )
    .await?;
    for part in parts {
        // A table of that name but another shape is not ours.
        let stored: Option<i32> = match tx
            .query_opt(
                "SELECT version FROM owner_access_schema WHERE part = $1",
                &[&part.name],
            )
            .await
        {
            Ok(row) => row
                .map(|row| row.try_get(0))
                .transpose()
                .map_err(|_| name_taken(store, "owner_access_schema"))?,
            Err(e) if e.code().is_some_and(|c| c.code().starts_with("42")) => {
                return Err(name_taken(store, "owner_access_schema"));
            }
            Err(e) => return Err(e.into()),
        };
        let from = stored.unwrap_or(0);
        if from > part.version() {
            return Err(Fail::Repo(RepositoryError::Corrupt {
                message: format!(
                    "the `{}` tables are at schema version {from}, newer than this build's {}",
                    part.name,
                    part.version()
                ),
            }));
        }
        for sql in &part.migrations[usize::try_from(from).unwrap_or(0)..] {
            if let Err(e) = tx.batch_execute(sql).await {
                return Err(match taken_name(&e) {
                    Some(name) => name_taken(store, &name),
                    None => e.into(),
                });
            }
        }
        tx.execute(
            "INSERT INTO owner_access_schema (part, version) VALUES ($1, $2)
             ON CONFLICT (part) DO UPDATE SET version = excluded.version",
            &[&part.name, &part.version()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn name_taken(store: &str, name: &str) -> Fail {
    Fail::Repo(RepositoryError::NameTaken {
        store: store.to_owned(),
        name: name.to_owned(),
    })
}

/// The name a migration could not create because another object has it: a host's
/// table, index, function or trigger named `owner_access_…`.
fn taken_name(e: &tokio_postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    let duplicate = [
        SqlState::DUPLICATE_TABLE,
        SqlState::DUPLICATE_OBJECT,
        SqlState::DUPLICATE_FUNCTION,
    ];
    if !duplicate.contains(db.code()) {
        return None;
    }
    // `relation "owner_access_owners" already exists`, `function
    // owner_access_now_ns() already exists with same argument types`.
    let message = db.message();
    let quoted = message.split('"').nth(1);
    let name = quoted.or_else(|| message.split_whitespace().nth(1))?;
    Some(name.trim_end_matches("()").to_owned())
}
