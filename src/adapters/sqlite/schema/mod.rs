//! The schema, versioned per part: the directory's tables (communities, owners) and
//! the store's (drafts, batches, deliveries, tokens, …) each have a migration chain
//! and a version of their own, kept in `owner_access_schema`, so one file can hold a
//! directory, a store, or both, beside a host's own tables. Every table, index and
//! trigger the crate creates is named `owner_access_…`; the crate touches nothing
//! else, and a host's `PRAGMA application_id` and `user_version` are left as they
//! are (an empty file, the crate's own, gets both).
//!
//! A file of the whole-file schema (`PRAGMA user_version` 1 to 13, the crate's
//! application id) is migrated by the closed chain in `legacy`, then its tables are
//! renamed into the two parts at version 1 and its `user_version` set to
//! [`SCHEMA_VERSION`].
//!
//! [`plan`] decides from what a file says about itself ([`Identity`]) what opening it
//! does, or refuses it; the probe runs it on a read-only view before anything is
//! touched, and [`migrate`] again under the file's write lock.

mod legacy;

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::fail::{Fail, Res};
use crate::domain::DELIVERED_KEY_VERSION;
use crate::repository::RepositoryError;

pub(super) use legacy::APPLICATION_ID;

/// `PRAGMA user_version` of a file whose schema is versioned per part (in
/// `owner_access_schema`), as a file this build creates or migrates from the
/// whole-file schema has it. A host's file keeps its own `user_version`.
pub const SCHEMA_VERSION: i64 = 1000;

/// The version of the directory part (communities and owners) this build writes.
pub const DIRECTORY_VERSION: i64 = DIRECTORY_MIGRATIONS.len() as i64;

/// The version of the store part (drafts, batches, deliveries, tokens, invitation
/// states, registrations owed, activity) this build writes.
pub const STORE_VERSION: i64 = STORE_MIGRATIONS.len() as i64;

/// The table that holds each part's version: `(part, version)`.
pub(super) const SCHEMA_TABLE: &str = "owner_access_schema";

const CREATE_SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS owner_access_schema (
    part    TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
) STRICT";

/// One step of the schema.
pub(super) enum Migration {
    /// SQL, run as one batch.
    Sql(&'static str),
    /// Code, for what SQL cannot do (inside the same transaction as the rest).
    Code(fn(&Connection) -> Res<()>),
}

impl Migration {
    fn apply(&self, conn: &Connection) -> Res<()> {
        match self {
            Migration::Sql(sql) => conn.execute_batch(sql)?,
            Migration::Code(step) => step(conn)?,
        }
        Ok(())
    }
}

/// The directory part's indexes at version 1, also created for the renamed tables of
/// a whole-file schema.
const DIRECTORY_V1_INDEXES: &str = include_str!("directory/0001_indexes.sql");
/// The store part's indexes and triggers at version 1, likewise.
const STORE_V1_INDEXES: &str = include_str!("store/0001_indexes.sql");

/// The directory part's migrations; migration `i` takes it from version `i` to `i + 1`.
const DIRECTORY_MIGRATIONS: &[Migration] = &[Migration::Sql(concat!(
    include_str!("directory/0001_tables.sql"),
    include_str!("directory/0001_indexes.sql")
))];

/// The store part's migrations.
const STORE_MIGRATIONS: &[Migration] = &[
    Migration::Sql(concat!(
        include_str!("store/0001_tables.sql"),
        include_str!("store/0001_indexes.sql")
    )),
    Migration::Sql(include_str!("store/0002_send_schedules.sql")),
];

/// The [`DELIVERED_KEY_VERSION`] that `owner_access_owners.email_key` holds at
/// [`DIRECTORY_VERSION`]. When the crate's key version changes, add a directory
/// migration that computes every key again (as the whole-file schema's step 4 did,
/// `legacy::rekey_email_index`) and set this to the new version: the build fails
/// until then.
const EMAIL_KEY_VERSION: u32 = 1;
const _: () = assert!(
    EMAIL_KEY_VERSION == DELIVERED_KEY_VERSION,
    "a new delivered_key version needs a directory migration that computes the keys again"
);

/// A part of the schema: tables of its own, with a version of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// Communities and owners ([`OwnerRepository`](crate::repository::OwnerRepository)).
    Directory,
    /// The workflow's state ([`InvitationStore`](crate::repository::InvitationStore)).
    Store,
}

impl Part {
    /// Its row in `owner_access_schema`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Part::Directory => "directory",
            Part::Store => "store",
        }
    }

    fn migrations(self) -> &'static [Migration] {
        match self {
            Part::Directory => DIRECTORY_MIGRATIONS,
            Part::Store => STORE_MIGRATIONS,
        }
    }

    /// The version this build writes.
    fn version(self) -> i64 {
        match self {
            Part::Directory => DIRECTORY_VERSION,
            Part::Store => STORE_VERSION,
        }
    }

    /// Every table, index and trigger the part's migrations create: names that must
    /// be free in a file where the part is not set up yet.
    pub(super) fn objects(self) -> &'static [&'static str] {
        match self {
            Part::Directory => &[
                "owner_access_communities",
                "owner_access_owners",
                "owner_access_owners_by_community",
                "owner_access_owners_by_email_key",
            ],
            Part::Store => &[
                "owner_access_invites",
                "owner_access_invite_selection",
                "owner_access_invite_attachments",
                "owner_access_drafts",
                "owner_access_batches",
                "owner_access_deliveries",
                "owner_access_invitations",
                "owner_access_tokens",
                "owner_access_registrations_owed",
                "owner_access_invitation_states",
                "owner_access_activity",
                "owner_access_send_schedules",
                "owner_access_drafts_by_community",
                "owner_access_batches_by_community",
                "owner_access_deliveries_by_state",
                "owner_access_invitations_one_live_per_owner",
                "owner_access_invitations_one_open_per_batch",
                "owner_access_invitations_by_owner",
                "owner_access_tokens_by_invitation",
                "owner_access_activity_feed",
                "owner_access_tokens_live_needs_live_invitation",
                "owner_access_tokens_state_moves_forward",
                "owner_access_invitations_move_forward",
                "owner_access_invitations_close_revokes_tokens",
            ],
        }
    }
}

/// Both parts, as a whole-file schema holds them.
const PARTS: [Part; 2] = [Part::Directory, Part::Store];

/// What a file says about itself.
pub(super) struct Identity {
    application_id: i64,
    user_version: i64,
    /// Every object in the file but SQLite's own, as (type, name).
    objects: Vec<(String, String)>,
    /// `owner_access_schema`'s rows, when it is a table of that shape.
    versions: Option<HashMap<String, i64>>,
}

impl Identity {
    fn has(&self, name: &str) -> bool {
        self.objects.iter().any(|(_, n)| n == name)
    }
}

pub(super) fn identity(conn: &Connection) -> Res<Identity> {
    let application_id = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let user_version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut stmt = conn.prepare(
        "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let objects = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<(String, String)>, _>>()?;
    let is_schema_table = objects
        .iter()
        .any(|(kind, name)| kind == "table" && name == SCHEMA_TABLE)
        && conn
            .prepare(
                "SELECT name, type FROM pragma_table_info('owner_access_schema') ORDER BY cid",
            )?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?
            .iter()
            .map(|(name, kind)| (name.as_str(), kind.to_ascii_uppercase()))
            .eq([
                ("part", "TEXT".to_owned()),
                ("version", "INTEGER".to_owned()),
            ]);
    let versions = if is_schema_table {
        let mut stmt = conn.prepare("SELECT part, version FROM owner_access_schema")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<HashMap<String, i64>, _>>()?;
        Some(rows)
    } else {
        None
    };
    Ok(Identity {
        application_id,
        user_version,
        objects,
        versions,
    })
}

/// What opening a file does to its schema.
pub(super) struct Plan {
    /// A file of the whole-file schema at this version: migrated to its last version,
    /// then split into the parts at version 1.
    legacy: Option<i64>,
    /// An empty file: it gets this crate's application id and [`SCHEMA_VERSION`].
    empty: bool,
    /// Each part to migrate, from the version it is at.
    steps: Vec<(Part, i64)>,
}

/// Decides what opening a file for `parts` does, or refuses it: one written by a newer
/// owner-access (the whole file, or a part), one where a name a part needs is taken
/// by another object. `store` names the handle in the errors.
pub(super) fn plan(path: &Path, store: &str, id: &Identity, parts: &[Part]) -> Res<Plan> {
    let untouched = |message: String| {
        Fail::Repo(RepositoryError::Corrupt {
            message: format!("{}: {message}; it was left untouched", path.display()),
        })
    };
    let taken = |name: &str| {
        Fail::Repo(RepositoryError::NameTaken {
            store: store.to_owned(),
            name: name.to_owned(),
        })
    };
    let ours = id.application_id == APPLICATION_ID;
    if ours && (1..=legacy::LAST_VERSION).contains(&id.user_version) {
        let needed = PARTS.iter().flat_map(|p| p.objects().iter().copied());
        if let Some(name) = std::iter::once(SCHEMA_TABLE)
            .chain(needed)
            .find(|n| id.has(n))
        {
            return Err(taken(name));
        }
        let steps = parts
            .iter()
            .filter(|p| p.version() > 1)
            .map(|p| (*p, 1))
            .collect();
        return Ok(Plan {
            legacy: Some(id.user_version),
            empty: false,
            steps,
        });
    }
    if ours && id.user_version != 0 && id.user_version != SCHEMA_VERSION {
        return Err(untouched(format!(
            "written by a newer owner-access (schema version {}, this build knows up to {} \
             and {SCHEMA_VERSION}, versioned per part)",
            id.user_version,
            legacy::LAST_VERSION
        )));
    }
    let versions = match &id.versions {
        Some(versions) => versions.clone(),
        None if id.has(SCHEMA_TABLE) => return Err(taken(SCHEMA_TABLE)),
        None => HashMap::new(),
    };
    let mut steps = Vec::new();
    for &part in parts {
        let at = versions.get(part.name()).copied().unwrap_or(0);
        if at > part.version() {
            return Err(untouched(format!(
                "its {} part was written by a newer owner-access (version {at}, this build \
                 knows up to {})",
                part.name(),
                part.version()
            )));
        }
        if at < 0 {
            return Err(untouched(format!(
                "its {} part has the version {at}, which no owner-access writes",
                part.name()
            )));
        }
        if at == 0
            && let Some(name) = part.objects().iter().find(|n| id.has(n))
        {
            return Err(taken(name));
        }
        if at < part.version() {
            steps.push((part, at));
        }
    }
    Ok(Plan {
        legacy: None,
        empty: id.objects.is_empty() && id.application_id == 0 && id.user_version == 0,
        steps,
    })
}

/// Applies what [`plan`] decides, in one `BEGIN IMMEDIATE` transaction: the file's
/// identity is read again under the lock, so two processes opening one file at once
/// migrate it once (the second finds the work done).
pub(super) fn migrate(path: &Path, store: &str, conn: &mut Connection, parts: &[Part]) -> Res<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id = identity(&tx)?;
    let plan = plan(path, store, &id, parts)?;
    if let Some(from) = plan.legacy {
        legacy::migrate(&tx, from)?;
        tx.execute_batch(legacy::TO_PARTS)?;
        tx.execute_batch(DIRECTORY_V1_INDEXES)?;
        tx.execute_batch(STORE_V1_INDEXES)?;
        tx.execute_batch(CREATE_SCHEMA_TABLE)?;
        for part in PARTS {
            set_version(&tx, part, 1)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    if plan.empty {
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    if !plan.steps.is_empty() {
        tx.execute_batch(CREATE_SCHEMA_TABLE)?;
    }
    for (part, from) in plan.steps {
        for migration in &part.migrations()[usize::try_from(from).unwrap_or(0)..] {
            migration.apply(&tx)?;
        }
        set_version(&tx, part, part.version())?;
    }
    tx.commit()?;
    Ok(())
}

fn set_version(conn: &Connection, part: Part, version: i64) -> Res<()> {
    conn.execute(
        "INSERT INTO owner_access_schema (part, version) VALUES (?1, ?2)
         ON CONFLICT (part) DO UPDATE SET version = excluded.version",
        rusqlite::params![part.name(), version],
    )?;
    Ok(())
}
