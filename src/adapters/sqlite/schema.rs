//! The schema: the embedded migrations (SQL files beside this one, and the Rust
//! re-key step), this crate's `PRAGMA application_id`, and the identity checks that
//! refuse a file this crate must not touch.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::fail::{Fail, Res};
use crate::domain::{DELIVERED_KEY_VERSION, delivered_key};
use crate::repository::RepositoryError;

/// `PRAGMA application_id` of an owner-access database ("OAcc").
pub(super) const APPLICATION_ID: i64 = 0x4F41_6363;

/// One step of the schema.
pub(super) enum Migration {
    /// SQL, run as one batch.
    Sql(&'static str),
    /// Code, for what SQL cannot do (inside the same transaction as the rest).
    Code(fn(&Connection) -> Res<()>),
}

/// The embedded migrations; migration `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration::Sql(include_str!("0001_initial.sql")),
    Migration::Sql(include_str!("0002_invite_sender.sql")),
    Migration::Sql(include_str!("0003_text_from_html.sql")),
    // 4: `owners.email_key` holds `delivered_key` version 1 (it held the trimmed,
    // lower-cased text). UTS #46 cannot be done in SQL.
    Migration::Code(rekey_email_index),
    Migration::Sql(include_str!("0005_community_letters.sql")),
    Migration::Sql(include_str!("0006_leases.sql")),
    Migration::Sql(include_str!("0007_pending_links.sql")),
    Migration::Sql(include_str!("0008_unreachable_runs.sql")),
    Migration::Sql(include_str!("0009_token_address.sql")),
    Migration::Sql(include_str!("0010_skipped_deliveries.sql")),
    Migration::Sql(include_str!("0011_registrations_owed.sql")),
    Migration::Sql(include_str!("0012_redeem_answers.sql")),
    Migration::Sql(include_str!("0013_invitation_states.sql")),
];

/// The [`DELIVERED_KEY_VERSION`] that `owners.email_key` holds in a file at
/// [`SCHEMA_VERSION`]. When the crate's key version changes, add a migration that
/// runs [`rekey_email_index`] and set this to the new version: the build fails until
/// then.
pub(super) const EMAIL_KEY_VERSION: u32 = 1;
const _: () = assert!(
    EMAIL_KEY_VERSION == DELIVERED_KEY_VERSION,
    "a new delivered_key version needs a migration that runs rekey_email_index"
);

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// What a file says about itself.
pub(super) struct Identity {
    application_id: i64,
    version: i64,
    tables: Vec<String>,
}

pub(super) fn identity(conn: &Connection) -> Res<Identity> {
    let application_id = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let tables = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(Identity {
        application_id,
        version,
        tables,
    })
}

/// Refuses a file this crate must not touch: another application's, or a newer
/// schema's.
pub(super) fn check_identity(path: &Path, id: &Identity) -> Res<()> {
    let corrupt = |message: String| {
        Fail::Repo(RepositoryError::Corrupt {
            message: format!("{}: {message}; it was left untouched", path.display()),
        })
    };
    if id.application_id == APPLICATION_ID {
        if id.version > SCHEMA_VERSION {
            return Err(corrupt(format!(
                "written by a newer owner-access (schema version {}, this build knows up to {SCHEMA_VERSION})",
                id.version
            )));
        }
        return Ok(());
    }
    if id.application_id == 0 && id.version == 0 && id.tables.is_empty() {
        return Ok(()); // an empty database: ours to set up
    }
    let mut tables = id
        .tables
        .iter()
        .take(8)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if id.tables.len() > 8 {
        tables.push_str(", …");
    }
    Err(corrupt(format!(
        "a SQLite database of another application (application_id {:#x}, user_version {}, tables: {})",
        id.application_id,
        id.version,
        if tables.is_empty() {
            "none".into()
        } else {
            tables
        }
    )))
}

/// Applies the missing migrations in one `BEGIN IMMEDIATE` transaction, checking the
/// file's identity again under the lock (another process may be opening it too).
pub(super) fn migrate(path: &Path, conn: &mut Connection) -> Res<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id = identity(&tx)?;
    check_identity(path, &id)?;
    if id.version < SCHEMA_VERSION {
        for migration in &MIGRATIONS[usize::try_from(id.version).unwrap_or(0)..] {
            match migration {
                Migration::Sql(sql) => tx.execute_batch(sql)?,
                Migration::Code(step) => step(&tx)?,
            }
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

/// Computes every owner's `email_key` again with this build's [`delivered_key`]: the
/// migration step for a new key version. Only the rows whose key changes are written;
/// they are collected first, so no row is updated under the scan that reads it.
pub(super) fn rekey_email_index(conn: &Connection) -> Res<()> {
    let mut changes: Vec<(i64, Option<String>)> = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT rowid, primary_email, email_key FROM owners")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let email: Option<String> = row.get(1)?;
            let stored: Option<String> = row.get(2)?;
            let key = email
                .as_deref()
                .map(delivered_key)
                .filter(|k| !k.is_empty());
            if key != stored {
                changes.push((row.get(0)?, key));
            }
        }
    }
    let mut update = conn.prepare("UPDATE owners SET email_key = ?2 WHERE rowid = ?1")?;
    for (rowid, key) in changes {
        update.execute(rusqlite::params![rowid, key])?;
    }
    Ok(())
}
