//! The embedded migrations of the two parts, `directory` and `store`, each versioned
//! in a row of `owner_access_schema`, applied on connect.
//!
//! Two processes connecting at once both run [`migrate`]: each takes a
//! transaction-level advisory lock first, so the second waits for the first's commit,
//! then finds the version already current and changes nothing.

use deadpool_postgres::Object;

use crate::domain::DELIVERED_KEY_VERSION;

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
    migrations: &[include_str!("store_0001.sql")],
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
/// [`Corrupt`](crate::repository::RepositoryError::Corrupt) (an older build must not
/// write a newer schema), and nothing changes.
pub(super) async fn migrate(client: &mut Object, parts: &[&Part]) -> Res<()> {
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
        let stored: Option<i32> = tx
            .query_opt(
                "SELECT version FROM owner_access_schema WHERE part = $1",
                &[&part.name],
            )
            .await?
            .map(|row| row.get(0));
        let from = stored.unwrap_or(0);
        if from > part.version() {
            return Err(Fail::Repo(crate::repository::RepositoryError::Corrupt {
                message: format!(
                    "the `{}` tables are at schema version {from}, newer than this build's {}",
                    part.name,
                    part.version()
                ),
            }));
        }
        for sql in &part.migrations[usize::try_from(from).unwrap_or(0)..] {
            tx.batch_execute(sql).await?;
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
