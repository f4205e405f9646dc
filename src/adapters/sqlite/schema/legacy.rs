//! The whole-file schema, closed: `PRAGMA user_version` 1 to 13 under this crate's
//! `PRAGMA application_id`, every table unprefixed. Its steps stay as they were, so
//! a file of any of those versions opens: it is migrated to 13 here, then
//! [`TO_PARTS`] renames its tables into the two parts (see the parent module).

use rusqlite::Connection;

use super::super::fail::Res;
use super::Migration;
use crate::domain::delivered_key;

/// `PRAGMA application_id` of an owner-access database ("OAcc").
pub(in crate::adapters::sqlite) const APPLICATION_ID: i64 = 0x4F41_6363;

/// The whole-file migrations; migration `i` takes the schema from version `i` to
/// `i + 1`. Closed: a new change goes into a part's chain.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(include_str!("legacy/0001_initial.sql")),
    Migration::Sql(include_str!("legacy/0002_invite_sender.sql")),
    Migration::Sql(include_str!("legacy/0003_text_from_html.sql")),
    // 4: `owners.email_key` holds `delivered_key` version 1 (it held the trimmed,
    // lower-cased text). UTS #46 cannot be done in SQL.
    Migration::Code(rekey_email_index),
    Migration::Sql(include_str!("legacy/0005_community_letters.sql")),
    Migration::Sql(include_str!("legacy/0006_leases.sql")),
    Migration::Sql(include_str!("legacy/0007_pending_links.sql")),
    Migration::Sql(include_str!("legacy/0008_unreachable_runs.sql")),
    Migration::Sql(include_str!("legacy/0009_token_address.sql")),
    Migration::Sql(include_str!("legacy/0010_skipped_deliveries.sql")),
    Migration::Sql(include_str!("legacy/0011_registrations_owed.sql")),
    Migration::Sql(include_str!("legacy/0012_redeem_answers.sql")),
    Migration::Sql(include_str!("legacy/0013_invitation_states.sql")),
];

/// The last whole-file version.
pub(super) const LAST_VERSION: i64 = 13;
const _: () = assert!(MIGRATIONS.len() as i64 == LAST_VERSION);

/// From the whole-file schema 13 to the parts at version 1: the tables renamed, their
/// indexes and triggers dropped (the parts' version-1 indexes create them again under
/// prefixed names).
pub(super) const TO_PARTS: &str = include_str!("legacy/to_parts.sql");

/// Applies the whole-file migrations after `from`, up to [`LAST_VERSION`].
pub(super) fn migrate(conn: &Connection, from: i64) -> Res<()> {
    for migration in &MIGRATIONS[usize::try_from(from).unwrap_or(0)..] {
        migration.apply(conn)?;
    }
    Ok(())
}

/// Computes every owner's `email_key` again with this build's [`delivered_key`]: the
/// migration step for a new key version. Only the rows whose key changes are written;
/// they are collected first, so no row is updated under the scan that reads it.
fn rekey_email_index(conn: &Connection) -> Res<()> {
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
