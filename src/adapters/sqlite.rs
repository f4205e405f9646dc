//! [`SqliteRepository`]: a durable [`OwnerRepository`] in one SQLite file (feature
//! `sqlite`).
//!
//! Built on `rusqlite` with SQLite bundled (the same SQLite everywhere, with `STRICT`
//! tables, `RETURNING` and JSON), each call run on Tokio's blocking pool. One writer
//! connection behind a mutex takes every write as `BEGIN IMMEDIATE`, so a
//! read-modify-write holds the file's write lock from its first read: two handles, or
//! two processes, on one file serialise instead of racing. Reads use a small pool of
//! read-only connections and see one snapshot per call (WAL mode lets them run while
//! a write is in progress).
//!
//! # The schema
//!
//! Embedded migrations, applied on open in one transaction; the version is
//! `PRAGMA user_version` and the file is marked with this crate's
//! `PRAGMA application_id`, so a file of another application is recognised and left
//! alone. The schema itself enforces (not only this code):
//!
//! - token hashes are unique (the primary key), and only the SHA-256 is stored;
//! - at most one live *invitation* per owner (a partial unique index). An invitation
//!   is one owner's messages of one batch, and every token belongs to one: several
//!   live tokens of the same batch may coexist (a message sent again after a crash
//!   carries a fresh token while the copy already delivered keeps working), tokens of
//!   another batch cannot. A token stored at claim, before its message goes out,
//!   belongs to a *pending* invitation (one open invitation per owner and batch,
//!   another partial unique index), which coexists with the owner's live one: when
//!   the delivery is recorded as sent, the same transaction closes the live
//!   invitation of another batch and makes the pending one, and its tokens, live.
//!   Triggers make a live token require a live invitation, revoke an invitation's
//!   tokens when it is closed, and keep token and invitation states moving forward
//!   only;
//! - one delivery per (batch, owner) (the primary key), with a state whose fields
//!   match it, and a count of the runs that left it pending because the server
//!   could not be reached (`unreachable_runs`, schema 8, never negative);
//! - redeeming is one conditional `UPDATE` (live, not expired, owner not registered),
//!   so of two concurrent redeems exactly one changes a row;
//! - a claim names its holder and the end of its lease (CHECKs tie both to the
//!   claimed state). Claiming a chunk is one conditional `UPDATE` (pending, or a lease
//!   that has run out); renewing, recording and releasing are conditional on the
//!   holder (fencing). Leases are judged by the `now` the caller passes: the
//!   processes sharing a file run on one machine;
//! - each owner's invitation state (first and last invited, count, expiry) is a row of
//!   the store's `invitation_states` (schema 13; it was columns of `owners`), written
//!   for a whole group of sent messages by one upsert in the transaction that records
//!   them; `owners` keeps the host's fields and a `registered` flag with its time;
//! - primary emails are **not** unique (host data may already share one); their
//!   [`delivered_key`] is an indexed column (`email_key`) that `email_holders` joins
//!   against. The key is computed in Rust (UTS #46 cannot be done in SQL), so a new
//!   [`DELIVERED_KEY_VERSION`] comes with a migration, written in Rust, that computes
//!   every stored key again. Schema version 4 is the first such step: a file written
//!   before it held trimmed, lower-cased text and is re-keyed when opened.
//!
//! # Errors
//!
//! A file refused as not ours is [`RepositoryError::Corrupt`]. A busy, full,
//! read-only or unreachable file is [`RepositoryError::Unavailable`], any other SQLite
//! failure [`RepositoryError::Backend`]; both keep the cause as their source, named
//! for what it means (`disk full`, `read-only file`, `database is locked`, `cannot open
//! the file`, `permission denied`, `I/O error`, `out of memory`) with the
//! `rusqlite::Error` beneath, or the `rusqlite::Error` itself (`no such table: …`).
//! A failed call keeps nothing: each call is one transaction.
//!
//! # Durability
//!
//! `synchronous = FULL` in WAL mode: every call that writes has committed durably
//! when it returns, so each delivery outcome, and each token before its message goes
//! out, survives a process kill or a power cut. After a crash, reopening the file
//! recovers the last committed state; a `resume` sends what is still pending, once
//! the dead sender's leases have run out.
//!
//! A file of a schema before leases (versions 1 to 5) is migrated on open: its claims
//! get the holder `pre-lease` and the ten-minute lease those versions gave them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, Params, Row, TransactionBehavior};
use time::OffsetDateTime;

use crate::domain::{
    ActivityEntry, Batch, BatchId, Branding, Community, CommunityId, DELIVERED_KEY_VERSION,
    Delivery, DeliveryCounts, DeliveryOutcome, DeliveryState, Draft, DraftId, EmailAddress,
    InvitationState, Mailbox, NewBatch, Owner, OwnerId, Page, PropertyId, Registered, SenderId,
    SkipReason, TimeZoneName, Timestamp, TokenHash, TokenRecord, TokenRejection, TokenState,
    delivered_key,
};
use crate::eligibility::{AccessFilter, EmailFilter, OwnerFilter};
use crate::invite::{Attachment, Invite};
use crate::repository::{
    ClaimHolder, EmailEdit, EmailHolder, HeldClaims, ImportSession, InvitationStore, Marked,
    OwedRegistration, OwnerDirectory, OwnerRepository, RedeemOutcome, RepoResult, RepositoryError,
};
use crate::selection::Selection;

/// `PRAGMA application_id` of an owner-access database ("OAcc").
const APPLICATION_ID: i64 = 0x4F41_6363;

/// One step of the schema.
enum Migration {
    /// SQL, run as one batch.
    Sql(&'static str),
    /// Code, for what SQL cannot do (inside the same transaction as the rest).
    Code(fn(&Connection) -> Res<()>),
}

/// The embedded migrations; migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(include_str!("sqlite/0001_initial.sql")),
    Migration::Sql(include_str!("sqlite/0002_invite_sender.sql")),
    Migration::Sql(include_str!("sqlite/0003_text_from_html.sql")),
    // 4: `owners.email_key` holds `delivered_key` version 1 (it held the trimmed,
    // lower-cased text). UTS #46 cannot be done in SQL.
    Migration::Code(rekey_email_index),
    Migration::Sql(include_str!("sqlite/0005_community_letters.sql")),
    Migration::Sql(include_str!("sqlite/0006_leases.sql")),
    Migration::Sql(include_str!("sqlite/0007_pending_links.sql")),
    Migration::Sql(include_str!("sqlite/0008_unreachable_runs.sql")),
    Migration::Sql(include_str!("sqlite/0009_token_address.sql")),
    Migration::Sql(include_str!("sqlite/0010_skipped_deliveries.sql")),
    Migration::Sql(include_str!("sqlite/0011_registrations_owed.sql")),
    Migration::Sql(include_str!("sqlite/0012_redeem_answers.sql")),
    Migration::Sql(include_str!("sqlite/0013_invitation_states.sql")),
];

/// The [`DELIVERED_KEY_VERSION`] that `owners.email_key` holds in a file at
/// [`SCHEMA_VERSION`]. When the crate's key version changes, add a migration that
/// runs [`rekey_email_index`] and set this to the new version: the build fails until
/// then.
const EMAIL_KEY_VERSION: u32 = 1;
const _: () = assert!(
    EMAIL_KEY_VERSION == DELIVERED_KEY_VERSION,
    "a new delivered_key version needs a migration that runs rekey_email_index"
);

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a call waits for another connection's write lock before giving up with
/// [`RepositoryError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle read-only connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// A durable [`OwnerRepository`] in one SQLite file (feature `sqlite`).
///
/// Open it with [`SqliteRepository::open`]. Cloning is cheap: clones share the
/// connections. Every method runs on Tokio's blocking pool, so it needs a Tokio
/// runtime (either flavour). Several handles and several processes may use one file
/// at once; writes serialise on the file's lock (waiting up to 10 s, then
/// [`RepositoryError::Unavailable`]).
///
/// See the [module docs](self) for the schema and what it enforces.
#[derive(Clone)]
pub struct SqliteRepository {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    statements: AtomicU64,
}

impl fmt::Display for SqliteRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQLite repository {}", self.inner.path.display())
    }
}

impl fmt::Debug for SqliteRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteRepository")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteRepository {
    /// A batch's deliveries in one settled state (`failed`, `skipped`), by owner: the
    /// state index answers it without reading the rest of the batch.
    async fn deliveries_in_state(
        &self,
        batch: &BatchId,
        state: &'static str,
    ) -> RepoResult<Vec<Delivery>> {
        let batch = batch.clone();
        self.read(move |db| {
            require_batch(db, &batch)?;
            db.rows(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE batch = ?1 AND state = ?2 ORDER BY owner"
                ),
                [batch.as_str(), state],
                |r| read_delivery(&batch, r),
            )
        })
        .await
    }
    /// Opens the database at `path`, creating the file and its schema when it does
    /// not exist (or is empty), and applying any embedded migration it lacks.
    ///
    /// # Errors
    /// - [`RepositoryError::Corrupt`] when the file is not a SQLite database, is
    ///   damaged, belongs to another application (it has tables but not this crate's
    ///   application id), or was written by a newer version of this crate. The file
    ///   is then left exactly as it was.
    /// - [`RepositoryError::Unavailable`] when the file cannot be opened or created
    ///   (a missing directory, no permission) or stays locked by another process
    ///   longer than the busy timeout: the same call may succeed later.
    /// - [`RepositoryError::Backend`] for any other SQLite failure, or when the file
    ///   system cannot hold a WAL-mode database.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteRepository, RepositoryError> {
        let path = path.as_ref().to_path_buf();
        let inner = tokio::task::spawn_blocking(move || Inner::open(path))
            .await
            .map_err(|e| join_error("SQLite repository", e))??;
        Ok(SqliteRepository {
            inner: Arc::new(inner),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many SQL statements this handle and its clones have executed so far
    /// (migrations excluded): for diagnostics, and for tests that check a call runs a
    /// fixed number of queries whatever the number of owners.
    pub fn statement_count(&self) -> u64 {
        self.inner.statements.load(Ordering::Relaxed)
    }

    async fn read<T, F>(&self, f: F) -> RepoResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Res<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.read(f))
            .await
            .map_err(|e| join_error(&self.to_string(), e))?
    }

    async fn write<T, F>(&self, f: F) -> RepoResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Res<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.write(f))
            .await
            .map_err(|e| join_error(&self.to_string(), e))?
    }
}

fn join_error(store: &str, e: tokio::task::JoinError) -> RepositoryError {
    RepositoryError::Backend {
        store: store.to_owned(),
        source: Box::new(e),
    }
}

// ----- Errors ------------------------------------------------------------------------

/// A failure inside a call: SQLite's, or one of the repository's own kinds.
enum Fail {
    Sql(rusqlite::Error),
    Repo(RepositoryError),
}

type Res<T> = Result<T, Fail>;

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<RepositoryError> for Fail {
    fn from(e: RepositoryError) -> Self {
        Fail::Repo(e)
    }
}

/// A plain message as an error source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

fn bad_row(what: &str, detail: impl fmt::Display) -> Fail {
    Fail::Repo(RepositoryError::Corrupt {
        message: format!("bad {what} in the database: {detail}"),
    })
}

fn not_found(what: &'static str, id: impl fmt::Display) -> Fail {
    Fail::Repo(RepositoryError::NotFound {
        what,
        id: id.to_string(),
    })
}

fn precondition(message: String) -> Fail {
    Fail::Repo(RepositoryError::Precondition { message })
}

/// A SQLite failure named by what it means for the file ("disk full", "read-only
/// file", "database is locked"), with SQLite's own error as its source: the cause
/// that [`RepositoryError::Unavailable`] and [`RepositoryError::Backend`] carry.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
struct SqliteCause {
    what: &'static str,
    #[source]
    source: rusqlite::Error,
}

/// What a SQLite result code means, in words, for the codes a host meets in
/// operation. Others (a missing table, a constraint) carry SQLite's own message.
fn meaning(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::DiskFull => "disk full",
        ErrorCode::ReadOnly => "read-only file",
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            "database is locked (another connection held the write lock past the busy time-out)"
        }
        ErrorCode::CannotOpen => "cannot open the file",
        ErrorCode::PermissionDenied => "permission denied",
        ErrorCode::SystemIoFailure => "I/O error",
        ErrorCode::OutOfMemory => "out of memory",
        _ => return None,
    })
}

/// The cause to keep: SQLite's error, named where its code has a meaning of its own.
fn cause(e: rusqlite::Error) -> Box<dyn std::error::Error + Send + Sync> {
    match e.sqlite_error_code().and_then(meaning) {
        Some(what) => Box::new(SqliteCause { what, source: e }),
        None => Box::new(e),
    }
}

/// Maps a SQLite error to the kind the workflow reacts to, keeping it as the cause.
fn classify(store: &str, e: rusqlite::Error) -> RepositoryError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => RepositoryError::Corrupt {
            message: format!("{store}: {e}"),
        },
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly,
        ) => RepositoryError::Unavailable {
            store: store.to_owned(),
            source: cause(e),
        },
        _ => match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => RepositoryError::Corrupt {
                message: format!("{store}: a stored value cannot be read: {e}"),
            },
            e => RepositoryError::Backend {
                store: store.to_owned(),
                source: cause(e),
            },
        },
    }
}

// ----- Connections -------------------------------------------------------------------

impl Inner {
    fn store(&self) -> String {
        format!("SQLite repository {}", self.path.display())
    }

    fn fail(&self, e: Fail) -> RepositoryError {
        match e {
            Fail::Repo(e) => e,
            Fail::Sql(e) => classify(&self.store(), e),
        }
    }

    fn open(path: PathBuf) -> RepoResult<Inner> {
        let store = format!("SQLite repository {}", path.display());
        let sql = |e| classify(&store, e);
        let has_content = std::fs::metadata(&path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        if has_content {
            // Look before touching: a foreign or damaged file is refused unchanged.
            probe(&path).map_err(|e| match e {
                Fail::Repo(e) => e,
                Fail::Sql(e)
                    if e.sqlite_error_code().is_some_and(|c| {
                        matches!(c, ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
                    }) =>
                {
                    RepositoryError::Corrupt {
                        message: format!(
                            "{} is not a usable owner-access database ({e}); it was left untouched",
                            path.display()
                        ),
                    }
                }
                Fail::Sql(e) => sql(e),
            })?;
        }
        let mut writer = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(RepositoryError::Backend {
                store,
                source: Box::new(Message(format!(
                    "the file system does not support WAL mode (journal mode is `{mode}`)"
                ))),
            });
        }
        writer
            .execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
            .map_err(sql)?;
        migrate(&path, &mut writer).map_err(|e| match e {
            Fail::Repo(e) => e,
            Fail::Sql(e) => sql(e),
        })?;
        Ok(Inner {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            statements: AtomicU64::new(0),
        })
    }

    fn reader(&self) -> Res<Connection> {
        if let Some(conn) = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    fn read<T>(&self, f: impl FnOnce(&Db<'_>) -> Res<T>) -> RepoResult<T> {
        let mut conn = self.reader().map_err(|e| self.fail(e))?;
        let result = (|| {
            let tx = conn.transaction()?;
            let value = f(&Db {
                conn: &tx,
                count: &self.statements,
            })?;
            tx.commit()?;
            Ok(value)
        })();
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result.map_err(|e| self.fail(e))
    }

    fn write<T>(&self, f: impl FnOnce(&Db<'_>) -> Res<T>) -> RepoResult<T> {
        // A panic inside `f` unwinds through the transaction, which rolls back: the
        // connection under a poisoned lock holds no half-applied change.
        let mut conn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&Db {
                conn: &tx,
                count: &self.statements,
            })?;
            tx.commit()?;
            Ok(value)
        })();
        result.map_err(|e| self.fail(e))
    }
}

/// What a file says about itself.
struct Identity {
    application_id: i64,
    version: i64,
    tables: Vec<String>,
}

fn identity(conn: &Connection) -> Res<Identity> {
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
fn check_identity(path: &Path, id: &Identity) -> Res<()> {
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

/// Reads a file's identity through a read-only connection, creating nothing beside
/// it: a file refused here is left as it was, with no `-wal` or `-shm` of ours.
///
/// Even a read-only connection to a WAL-mode file creates its `-wal` and `-shm`. With
/// neither there, the main file holds the whole database, so it is read as immutable
/// (no locks, no side files). When they exist (another connection has the file open,
/// or one crashed), the file is read through them, and any that this read created is
/// removed if the file is refused.
fn probe(path: &Path) -> Res<()> {
    let sides = side_files(path);
    let existed: Vec<bool> = sides.iter().map(|p| p.exists()).collect();
    let result = if existed.iter().any(|e| *e) {
        probe_with(path, path.as_os_str().to_owned(), OpenFlags::empty())
    } else {
        // `file:///abs` (an empty authority) for an absolute path, so that one that
        // starts with `//` is not read as a host name.
        let encoded = uri_path(path);
        let prefix = if encoded.starts_with('/') {
            "file://"
        } else {
            "file:"
        };
        let mut uri = std::ffi::OsString::from(prefix);
        uri.push(encoded);
        uri.push("?mode=ro&immutable=1");
        probe_with(path, uri, OpenFlags::SQLITE_OPEN_URI)
    };
    if result.is_err() {
        for (side, existed) in sides.iter().zip(existed) {
            if !existed {
                let _ = std::fs::remove_file(side);
            }
        }
    }
    result
}

fn probe_with(path: &Path, name: std::ffi::OsString, flags: OpenFlags) -> Res<()> {
    let conn = Connection::open_with_flags(
        name,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | flags,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let id = identity(&conn)?;
    check_identity(path, &id)
}

/// The files SQLite keeps beside a WAL-mode database.
fn side_files(path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// A path as the path part of a `file:` URI: bytes other than unreserved characters
/// and `/` are percent-encoded (a `?`, `#` or `%` in a file name means itself).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Applies the missing migrations in one `BEGIN IMMEDIATE` transaction, checking the
/// file's identity again under the lock (another process may be opening it too).
fn migrate(path: &Path, conn: &mut Connection) -> Res<()> {
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

/// One call's view of a connection inside its transaction; counts statements.
struct Db<'a> {
    conn: &'a Connection,
    count: &'a AtomicU64,
}

impl Db<'_> {
    fn exec<P: Params>(&self, sql: &str, params: P) -> Res<usize> {
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(self.conn.prepare_cached(sql)?.execute(params)?)
    }

    fn rows<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnMut(&Row<'_>) -> Res<T>,
    ) -> Res<Vec<T>> {
        self.rows_at_most(sql, params, 0, f)
    }

    /// [`rows`](Self::rows) when there are at most `expected` of them: one allocation
    /// instead of a doubling vector (which holds up to twice the rows at its peak).
    fn rows_at_most<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        expected: usize,
        mut f: impl FnMut(&Row<'_>) -> Res<T>,
    ) -> Res<Vec<T>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        let mut out = Vec::with_capacity(expected);
        while let Some(row) = rows.next()? {
            out.push(f(row)?);
        }
        Ok(out)
    }

    fn row<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> Res<T>,
    ) -> Res<Option<T>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        match rows.next()? {
            Some(row) => f(row).map(Some),
            None => Ok(None),
        }
    }

    fn exists<P: Params>(&self, sql: &str, params: P) -> Res<bool> {
        Ok(self.row(sql, params, |_| Ok(()))?.is_some())
    }

    fn last_insert_rowid(&self) -> i64 {
        self.conn.last_insert_rowid()
    }
}

// ----- Values ------------------------------------------------------------------------

/// A timestamp as stored: nanoseconds since the epoch.
fn ts(t: Timestamp) -> Res<i64> {
    i64::try_from(t.as_offset_date_time().unix_timestamp_nanos()).map_err(|_| {
        Fail::Repo(RepositoryError::Backend {
            store: "SQLite repository".into(),
            source: Box::new(Message(format!(
                "{t} is outside the range the SQLite repository stores (years 1678 to 2261)"
            ))),
        })
    })
}

fn read_ts(n: i64) -> Res<Timestamp> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n))
        .map(Timestamp::from_offset_date_time)
        .map_err(|e| bad_row("timestamp", e))
}

fn read_opt_ts(n: Option<i64>) -> Res<Option<Timestamp>> {
    n.map(read_ts).transpose()
}

fn need<T>(value: Option<T>, what: &str) -> Res<T> {
    value.ok_or_else(|| bad_row(what, "missing"))
}

macro_rules! read_id {
    ($ty:ty, $raw:expr, $what:expr) => {
        <$ty>::new(&$raw).map_err(|e| bad_row($what, e))
    };
}

fn read_address(raw: &str, what: &str) -> Res<EmailAddress> {
    EmailAddress::parse(raw).map_err(|e| bad_row(what, e))
}

/// A list as one JSON array parameter, for `json_each`: one statement, any length.
fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    json_array(items)
}

/// How many rows of a large write (a batch's deliveries, an invite's selection) go
/// into one statement: few enough that its JSON is a few hundred KB, many enough that
/// statement overhead does not count.
const WRITE_CHUNK: usize = 10_000;

/// A JSON array of `[a, b]` pairs, read in SQL as `value ->> 0` and `value ->> 1`.
fn json_pairs<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    json_array(items.into_iter().map(|(a, b)| [a, b]))
}

/// Serialises straight from the iterator: no intermediate values or copies.
fn json_array<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> String {
    use serde::Serializer as _;
    let mut out = Vec::new();
    serde_json::Serializer::new(&mut out)
        .collect_seq(items)
        .expect("serialising strings to memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ----- Owners ------------------------------------------------------------------------

/// [`read_owner`]'s columns: the registered flag and its time are columns 7 and 8.
const OWNER_COLUMNS: &str = "id, community, property, first_name, last_name, property_address, \
                             primary_email, registered, registered_at";

fn read_owner(row: &Row<'_>) -> Res<Owner> {
    let registered = match row.get::<_, i64>(7)? {
        0 => None,
        1 => Some(Registered {
            at: read_opt_ts(row.get(8)?)?,
        }),
        other => return Err(bad_row("owners.registered", other)),
    };
    Ok(Owner {
        id: read_id!(OwnerId, row.get::<_, String>(0)?, "owners.id")?,
        community: read_id!(CommunityId, row.get::<_, String>(1)?, "owners.community")?,
        property: read_id!(PropertyId, row.get::<_, String>(2)?, "owners.property")?,
        first_name: row.get(3)?,
        last_name: row.get(4)?,
        property_address: row.get(5)?,
        primary_email: row.get(6)?,
        registered,
    })
}

/// The registered columns of an owner: (flag, time).
fn registered_columns(registered: Option<&Registered>) -> Res<(bool, Option<i64>)> {
    Ok(match registered {
        None => (false, None),
        Some(Registered { at }) => (true, at.map(ts).transpose()?),
    })
}

fn put_owner(db: &Db<'_>, owner: &Owner) -> Res<()> {
    let (registered, registered_at) = registered_columns(owner.registered.as_ref())?;
    db.exec(
        "INSERT INTO owners (id, community, property, first_name, last_name, property_address, \
             primary_email, email_key, registered, registered_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO UPDATE SET
             community = excluded.community, property = excluded.property,
             first_name = excluded.first_name, last_name = excluded.last_name,
             property_address = excluded.property_address, primary_email = excluded.primary_email,
             email_key = excluded.email_key, registered = excluded.registered,
             registered_at = excluded.registered_at",
        rusqlite::params![
            owner.id.as_str(),
            owner.community.as_str(),
            owner.property.as_str(),
            owner.first_name,
            owner.last_name,
            owner.property_address,
            owner.primary_email,
            owner.email_key(),
            registered,
            registered_at,
        ],
    )?;
    Ok(())
}

fn owners_by_id(db: &Db<'_>, ids: &[&str]) -> Res<HashMap<OwnerId, Owner>> {
    let owners = db.rows(
        &format!(
            "SELECT {OWNER_COLUMNS} FROM owners WHERE id IN (SELECT value FROM json_each(?1))"
        ),
        [json_list(ids.iter().copied())],
        read_owner,
    )?;
    Ok(owners.into_iter().map(|o| (o.id.clone(), o)).collect())
}

/// Closes the owner's open (pending and live) invitations: the schema's trigger
/// revokes their tokens at `at` in the same statement.
fn close_open_invitations(db: &Db<'_>, owner: &OwnerId, at: i64) -> Res<()> {
    db.exec(
        "UPDATE invitations SET state = 'closed', closed_at = ?2
         WHERE owner = ?1 AND state <> 'closed'",
        rusqlite::params![owner.as_str(), at],
    )?;
    Ok(())
}

/// What recording sent messages does to their owners' links: each owner's live
/// invitation of another batch is closed (its tokens revoked at `at`, a trigger:
/// superseded), the batch's pending invitation of the owner becomes live, and its
/// pending tokens live. In this order, for the one-live-invitation index; three
/// statements for a whole group of outcomes.
fn accept_invitations(db: &Db<'_>, batch: &BatchId, owners: &[&OwnerId], at: i64) -> Res<()> {
    if owners.is_empty() {
        return Ok(());
    }
    let owners = json_list(owners.iter().map(|o| o.as_str()));
    db.exec(
        "UPDATE invitations SET state = 'closed', closed_at = ?3
         WHERE state = 'live' AND batch <> ?2
           AND owner IN (SELECT value FROM json_each(?1))",
        rusqlite::params![owners, batch.as_str(), at],
    )?;
    db.exec(
        "UPDATE invitations SET state = 'live'
         WHERE batch = ?2 AND state = 'pending'
           AND owner IN (SELECT value FROM json_each(?1))",
        [owners.as_str(), batch.as_str()],
    )?;
    db.exec(
        "UPDATE tokens SET state = 'live'
         WHERE state = 'pending' AND invitation IN (SELECT id FROM invitations
                 WHERE batch = ?2 AND state = 'live'
                   AND owner IN (SELECT value FROM json_each(?1)))",
        [owners.as_str(), batch.as_str()],
    )?;
    Ok(())
}

// ----- Invites (of drafts and batches) -----------------------------------------------

fn insert_invite(db: &Db<'_>, invite: &Invite) -> Res<i64> {
    // Destructured so a new field of `Invite` cannot be forgotten here.
    let Invite {
        community,
        selection,
        subject,
        text_body,
        html_body,
        reply_to,
        summary_to,
        attachments,
        draft,
        from,
        portal_url,
    } = invite;
    db.exec(
        "INSERT INTO invites (community, subject, text_body, html_body, reply_to, summary_to, draft,
                              sender, portal_url, text_from_html)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        rusqlite::params![
            community.as_str(),
            subject,
            text_body.as_deref().unwrap_or_default(),
            html_body,
            reply_to,
            summary_to,
            draft.as_ref().map(DraftId::as_str),
            from,
            portal_url,
            text_body.is_none(),
        ],
    )?;
    let id = db.last_insert_rowid();
    // A statement per chunk of the selection, as for a batch's deliveries.
    let mut selected = selection.iter().peekable();
    while selected.peek().is_some() {
        let chunk = json_list(selected.by_ref().take(WRITE_CHUNK).map(OwnerId::as_str));
        db.exec(
            "INSERT INTO invite_selection (invite, owner) SELECT ?1, value FROM json_each(?2)",
            rusqlite::params![id, chunk],
        )?;
    }
    for (position, a) in attachments.iter().enumerate() {
        db.exec(
            "INSERT INTO invite_attachments (invite, position, file_name, content_type, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, limit(position), a.file_name, a.content_type, a.bytes],
        )?;
    }
    Ok(id)
}

fn read_invite(db: &Db<'_>, id: i64) -> Res<Invite> {
    let head = db
        .row(
            "SELECT community, subject, text_body, html_body, reply_to, summary_to, draft,
                    sender, portal_url, text_from_html
             FROM invites WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    (
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ),
                    (
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ),
                    (
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, bool>(9)?,
                    ),
                ))
            },
        )?
        .ok_or_else(|| bad_row("invite reference", id))?;
    let selection = db.rows(
        "SELECT owner FROM invite_selection WHERE invite = ?1 ORDER BY owner",
        [id],
        |r| read_id!(OwnerId, r.get::<_, String>(0)?, "invite_selection.owner"),
    )?;
    let attachments = db.rows(
        "SELECT file_name, content_type, bytes FROM invite_attachments
         WHERE invite = ?1 ORDER BY position",
        [id],
        |r| {
            Ok(Attachment {
                file_name: r.get(0)?,
                content_type: r.get(1)?,
                bytes: r.get(2)?,
            })
        },
    )?;
    let (
        (community, subject, text_body, html_body),
        (reply_to, summary_to, draft),
        (from, portal_url, text_from_html),
    ) = head;
    Ok(Invite {
        community: read_id!(CommunityId, community, "invites.community")?,
        selection: Selection::of(selection),
        subject,
        text_body: (!text_from_html).then_some(text_body),
        html_body,
        reply_to,
        summary_to,
        attachments,
        draft: draft
            .map(|d| read_id!(DraftId, d, "invites.draft"))
            .transpose()?,
        from,
        portal_url,
    })
}

fn read_draft(db: &Db<'_>, row: (String, i64, i64, i64)) -> Res<Draft> {
    let (id, invite, created_at, updated_at) = row;
    Ok(Draft {
        id: read_id!(DraftId, id, "drafts.id")?,
        invite: read_invite(db, invite)?,
        created_at: read_ts(created_at)?,
        updated_at: read_ts(updated_at)?,
    })
}

// ----- Batches and deliveries --------------------------------------------------------

const BATCH_COLUMNS: &str = "id, community, invite, sender_name, sender_address, portal_url, \
     token_ttl_seconds, created_at, resend";

type BatchRow = (
    String,
    String,
    i64,
    Option<String>,
    String,
    String,
    i64,
    i64,
    bool,
);

fn batch_row(r: &Row<'_>) -> Res<BatchRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn read_batch(db: &Db<'_>, row: BatchRow) -> Res<Batch> {
    let (id, community, invite, sender_name, sender_address, portal_url, ttl, created_at, resend) =
        row;
    Ok(Batch {
        id: read_id!(BatchId, id, "batches.id")?,
        community: read_id!(CommunityId, community, "batches.community")?,
        invite: read_invite(db, invite)?,
        sender: Mailbox {
            name: sender_name,
            address: read_address(&sender_address, "batches.sender_address")?,
        },
        portal_url,
        token_ttl_seconds: u64::try_from(ttl)
            .map_err(|e| bad_row("batches.token_ttl_seconds", e))?,
        created_at: read_ts(created_at)?,
        resend,
    })
}

fn require_batch(db: &Db<'_>, batch: &BatchId) -> Res<()> {
    if db.exists("SELECT 1 FROM batches WHERE id = ?1", [batch.as_str()])? {
        Ok(())
    } else {
        Err(not_found("batch", batch))
    }
}

macro_rules! delivery_columns {
    () => {
        "owner, to_addr, state, state_at, error, attempts, holder, lease_until, unreachable_runs, skip_reason"
    };
}

const DELIVERY_COLUMNS: &str = delivery_columns!();

fn read_delivery(batch: &BatchId, r: &Row<'_>) -> Res<Delivery> {
    let state: String = r.get(2)?;
    let at = read_opt_ts(r.get(3)?)?;
    let state = match (state.as_str(), at) {
        ("pending", None) => DeliveryState::Pending,
        ("claimed", Some(at)) => DeliveryState::Claimed {
            at,
            holder: read_id!(
                SenderId,
                need(r.get::<_, Option<String>>(6)?, "deliveries.holder")?,
                "deliveries.holder"
            )?,
            until: read_ts(need(r.get(7)?, "deliveries.lease_until")?)?,
        },
        ("sent", Some(at)) => DeliveryState::Sent { at },
        ("failed", Some(at)) => DeliveryState::Failed {
            at,
            error: need(r.get(4)?, "deliveries.error")?,
        },
        ("skipped", Some(at)) => {
            let code: String = need(r.get(9)?, "deliveries.skip_reason")?;
            DeliveryState::Skipped {
                at,
                reason: SkipReason::from_code(&code)
                    .ok_or_else(|| bad_row("deliveries.skip_reason", code))?,
            }
        }
        (other, _) => return Err(bad_row("deliveries.state", other)),
    };
    Ok(Delivery {
        batch: batch.clone(),
        owner: read_id!(OwnerId, r.get::<_, String>(0)?, "deliveries.owner")?,
        to: read_address(&r.get::<_, String>(1)?, "deliveries.to_addr")?,
        state,
        attempts: u32::try_from(r.get::<_, i64>(5)?)
            .map_err(|e| bad_row("deliveries.attempts", e))?,
        unreachable_runs: u32::try_from(r.get::<_, i64>(8)?)
            .map_err(|e| bad_row("deliveries.unreachable_runs", e))?,
    })
}

// ----- Tokens and activity -----------------------------------------------------------

fn read_token(db: &Db<'_>, hash: &TokenHash) -> Res<Option<TokenRecord>> {
    db.row(
        "SELECT i.owner, i.batch, t.issued_at, t.expires_at, t.state, t.state_at,
                coalesce(t.sent_to, (SELECT d.to_addr FROM deliveries d
                                     WHERE d.batch = i.batch AND d.owner = i.owner), '')
         FROM tokens t JOIN invitations i ON i.id = t.invitation WHERE t.hash = ?1",
        [&hash.0[..]],
        |r| {
            let state: String = r.get(4)?;
            let at = read_opt_ts(r.get(5)?)?;
            let state = match (state.as_str(), at) {
                ("pending", None) => TokenState::Pending,
                ("live", None) => TokenState::Live,
                ("revoked", Some(at)) => TokenState::Revoked { at },
                ("redeemed", Some(at)) => TokenState::Redeemed { at },
                (other, _) => return Err(bad_row("tokens.state", other)),
            };
            Ok(TokenRecord {
                hash: *hash,
                owner: read_id!(OwnerId, r.get::<_, String>(0)?, "invitations.owner")?,
                batch: read_id!(BatchId, r.get::<_, String>(1)?, "invitations.batch")?,
                issued_at: read_ts(r.get(2)?)?,
                expires_at: read_ts(r.get(3)?)?,
                sent_to: r.get(6)?,
                state,
            })
        },
    )
}

fn append_activity(db: &Db<'_>, entry: &ActivityEntry) -> Res<()> {
    let details = serde_json::to_value(&entry.kind).map_err(|e| {
        Fail::Repo(RepositoryError::Backend {
            store: "SQLite repository".into(),
            source: Box::new(e),
        })
    })?;
    let kind = details
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    db.exec(
        "INSERT INTO activity (community, at, kind, details) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![
            entry.community.as_str(),
            ts(entry.at)?,
            kind,
            details.to_string()
        ],
    )?;
    Ok(())
}

// ----- The port ----------------------------------------------------------------------

/// [`read_community`]'s columns.
const COMMUNITY_COLUMNS: &str = "id, name, reply_to, time_zone, logo_url, accent_color";

fn read_community(r: &Row<'_>) -> Res<Community> {
    let mut branding = Branding::default();
    if let Some(url) = r.get::<_, Option<String>>(4)? {
        branding = branding
            .with_logo_url(&url)
            .map_err(|e| bad_row("communities.logo_url", e))?;
    }
    if let Some(color) = r.get::<_, Option<String>>(5)? {
        branding = branding
            .with_accent_color(&color)
            .map_err(|e| bad_row("communities.accent_color", e))?;
    }
    Ok(Community {
        id: read_id!(CommunityId, r.get::<_, String>(0)?, "communities.id")?,
        name: r.get(1)?,
        reply_to: r
            .get::<_, Option<String>>(2)?
            .map(|a| read_address(&a, "communities.reply_to"))
            .transpose()?,
        time_zone: r
            .get::<_, Option<String>>(3)?
            .map(|z| TimeZoneName::new(&z).map_err(|e| bad_row("communities.time_zone", e)))
            .transpose()?,
        branding,
    })
}

/// Every holder of the keys in `?1` (a JSON array).
const EMAIL_HOLDERS: &str = "SELECT o.email_key, o.id, o.property
     FROM (SELECT DISTINCT value AS key FROM json_each(?1)) k
     JOIN owners o ON o.email_key = k.key";

/// The holders of the keys in `?1` that another owner holds too. The second holder is
/// looked for in the email_key index (rowids are in it), so a key held once costs two
/// index probes and returns nothing.
const SHARED_EMAIL_HOLDERS: &str = "SELECT o.email_key, o.id, o.property
     FROM (SELECT DISTINCT value AS key FROM json_each(?1)) k
     JOIN owners o ON o.email_key = k.key
     WHERE EXISTS (SELECT 1 FROM owners o2
                   WHERE o2.email_key = k.key AND o2.rowid <> o.rowid)";

impl SqliteRepository {
    /// The holders of the keys (passed through `delivered_key` here) that `sql` selects as
    /// (email_key, id, property), with the keys as a JSON array in `?1`.
    async fn holders(&self, keys: &[String], sql: &'static str) -> RepoResult<Vec<EmailHolder>> {
        let keys = json_array(keys.iter().map(|k| delivered_key(k)));
        self.read(move |db| {
            db.rows(sql, [keys], |r| {
                Ok(EmailHolder {
                    key: r.get(0)?,
                    owner: read_id!(OwnerId, r.get::<_, String>(1)?, "owners.id")?,
                    property: read_id!(PropertyId, r.get::<_, String>(2)?, "owners.property")?,
                })
            })
        })
        .await
    }
}

#[async_trait]
impl OwnerDirectory for SqliteRepository {
    async fn upsert_community(&self, community: &Community) -> RepoResult<()> {
        let c = community.clone();
        self.write(move |db| put_community(db, &c)).await
    }

    async fn upsert_owners(&self, owners: &[Owner], now: Timestamp) -> RepoResult<()> {
        let owners = owners.to_vec();
        self.write(move |db| upsert_owners_in(db, &owners, now))
            .await
    }

    /// One transaction on a connection of its own, held by a blocking thread until
    /// `commit` (or until the session is dropped, which rolls it back). The session
    /// takes the file's write lock when it begins: other writes wait for it up to the
    /// busy time-out (10 s), as writes from another process do.
    async fn begin_import<'a>(&'a self, now: Timestamp) -> RepoResult<Box<dyn ImportSession + 'a>> {
        let (steps, queue) = std::sync::mpsc::sync_channel(1);
        let (ready, begun) = tokio::sync::oneshot::channel();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.import(now, queue, ready));
        let store = self.to_string();
        begun.await.map_err(|_| session_ended(&store))??;
        Ok(Box::new(SqliteImport {
            steps: Some(steps),
            store,
        }))
    }
}

#[async_trait]
impl OwnerRepository for SqliteRepository {
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        let id = id.clone();
        self.read(move |db| {
            db.row(
                &format!("SELECT {COMMUNITY_COLUMNS} FROM communities WHERE id = ?1"),
                [id.as_str()],
                read_community,
            )
        })
        .await
    }

    async fn communities(&self) -> RepoResult<Vec<Community>> {
        self.read(|db| {
            db.rows(
                &format!("SELECT {COMMUNITY_COLUMNS} FROM communities ORDER BY id"),
                [],
                read_community,
            )
        })
        .await
    }

    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        let expected = ids.len();
        let ids = json_list(ids.iter().map(OwnerId::as_str));
        self.read(move |db| {
            db.rows_at_most(
                &format!(
                    "SELECT {OWNER_COLUMNS} FROM owners
                     WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id"
                ),
                [ids],
                expected,
                read_owner,
            )
        })
        .await
    }

    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<Owner>> {
        let community = community.clone();
        let filter = filter.clone();
        self.read(move |db| {
            // The store narrows by the indexed columns; `OwnerFilter::matches_owner`
            // has the last word (search folds Unicode case).
            let registered = registered_condition(filter.access);
            let email = match filter.email {
                EmailFilter::Any => "",
                EmailFilter::WithEmail => " AND email_key IS NOT NULL",
                EmailFilter::WithoutEmail => " AND email_key IS NULL",
            };
            let owners = db.rows(
                &format!(
                    "SELECT {OWNER_COLUMNS} FROM owners WHERE community = ?1{registered}{email}"
                ),
                [community.as_str()],
                read_owner,
            )?;
            Ok(owners
                .into_iter()
                .filter(|o| filter.matches_owner(o))
                .collect())
        })
        .await
    }

    /// From the id column alone when the registered flag decides the filter (no
    /// email filter, no search text); otherwise through the records, as
    /// `community_owners` does.
    async fn community_owner_ids(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<OwnerId>> {
        let searching = filter
            .search
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty());
        if filter.email != EmailFilter::Any || searching {
            let owners = self.community_owners(community, filter).await?;
            return Ok(owners.into_iter().map(|o| o.id).collect());
        }
        let registered = registered_condition(filter.access);
        let community = community.clone();
        self.read(move |db| {
            db.rows(
                &format!("SELECT id FROM owners WHERE community = ?1{registered}"),
                [community.as_str()],
                |r| read_id!(OwnerId, r.get::<_, String>(0)?, "owners.id"),
            )
        })
        .await
    }

    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.holders(keys, EMAIL_HOLDERS).await
    }

    async fn shared_email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.holders(keys, SHARED_EMAIL_HOLDERS).await
    }

    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>> {
        let edits = edits.to_vec();
        self.write(move |db| {
            let ids: Vec<&str> = edits.iter().map(|e| e.owner.as_str()).collect();
            let mut stored = owners_by_id(db, &ids)?;
            // The last edit of an owner wins.
            let mut last: BTreeMap<&OwnerId, &EmailEdit> = BTreeMap::new();
            for edit in &edits {
                if !stored.contains_key(&edit.owner) {
                    return Err(not_found("owner", &edit.owner));
                }
                last.insert(&edit.owner, edit);
            }
            // Compare-and-set on uniqueness, before anything is written.
            let mut taken: HashMap<String, &OwnerId> = HashMap::new();
            for (owner, edit) in &last {
                let Some(key) = edit
                    .email
                    .as_deref()
                    .map(delivered_key)
                    .filter(|k| !k.is_empty())
                else {
                    continue;
                };
                if let Some(other) = taken.insert(key.clone(), owner) {
                    return Err(precondition(format!(
                        "owners `{other}` and `{owner}` would share `{key}`"
                    )));
                }
            }
            let holders = db.rows(
                "SELECT o.email_key, o.id FROM (SELECT DISTINCT value AS key FROM json_each(?1)) k
                 JOIN owners o ON o.email_key = k.key ORDER BY o.email_key, o.id",
                [json_list(taken.keys().map(String::as_str))],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )?;
            let edited: HashSet<&str> = last.keys().map(|o| o.as_str()).collect();
            if let Some((key, holder)) =
                holders.iter().find(|(_, id)| !edited.contains(id.as_str()))
            {
                return Err(precondition(format!("`{key}` is held by owner `{holder}`")));
            }
            let mut changed = Vec::new();
            for (id, edit) in last {
                let Some(mut owner) = stored.remove(id) else {
                    continue;
                };
                let old_key = owner.email_key();
                owner.primary_email = edit.email.clone();
                if owner.email_key() != old_key {
                    changed.push(id.clone());
                }
                db.exec(
                    "UPDATE owners SET primary_email = ?2, email_key = ?3 WHERE id = ?1",
                    rusqlite::params![id.as_str(), owner.primary_email, owner.email_key()],
                )?;
            }
            Ok(changed)
        })
        .await
    }

    async fn mark_registered(
        &self,
        owner: &OwnerId,
        sent_to: &str,
        at: Timestamp,
    ) -> RepoResult<Marked> {
        let owner = owner.clone();
        let key = delivered_key(sent_to);
        self.write(move |db| {
            let Some(mut stored) = db.row(
                &format!("SELECT {OWNER_COLUMNS} FROM owners WHERE id = ?1"),
                [owner.as_str()],
                read_owner,
            )?
            else {
                return Ok(Marked::UnknownOwner);
            };
            if key.is_empty() || stored.email_key().as_deref() != Some(key.as_str()) {
                return Ok(Marked::AddressChanged);
            }
            if !stored.is_registered() {
                db.exec(
                    "UPDATE owners SET registered = 1, registered_at = ?2 WHERE id = ?1",
                    rusqlite::params![stored.id.as_str(), ts(at)?],
                )?;
                stored.registered = Some(Registered { at: Some(at) });
            }
            Ok(Marked::Registered(Box::new(stored)))
        })
        .await
    }
}

#[async_trait]
impl InvitationStore for SqliteRepository {
    async fn save_draft(&self, draft: &Draft) -> RepoResult<()> {
        let draft = draft.clone();
        self.write(move |db| {
            let old: Option<i64> = db.row(
                "SELECT invite FROM drafts WHERE id = ?1",
                [draft.id.as_str()],
                |r| Ok(r.get(0)?),
            )?;
            let invite = insert_invite(db, &draft.invite)?;
            db.exec(
                "INSERT INTO drafts (id, invite, community, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET invite = excluded.invite,
                     community = excluded.community, created_at = excluded.created_at,
                     updated_at = excluded.updated_at",
                rusqlite::params![
                    draft.id.as_str(),
                    invite,
                    draft.invite.community.as_str(),
                    ts(draft.created_at)?,
                    ts(draft.updated_at)?,
                ],
            )?;
            if let Some(old) = old {
                db.exec("DELETE FROM invites WHERE id = ?1", [old])?;
            }
            Ok(())
        })
        .await
    }

    async fn draft(&self, id: &DraftId) -> RepoResult<Option<Draft>> {
        let id = id.clone();
        self.read(move |db| {
            let row = db.row(
                "SELECT id, invite, created_at, updated_at FROM drafts WHERE id = ?1",
                [id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            row.map(|row| read_draft(db, row)).transpose()
        })
        .await
    }

    async fn drafts(&self, community: &CommunityId) -> RepoResult<Vec<Draft>> {
        let community = community.clone();
        self.read(move |db| {
            let rows = db.rows(
                "SELECT id, invite, created_at, updated_at FROM drafts WHERE community = ?1
                 ORDER BY updated_at DESC, id ASC",
                [community.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            rows.into_iter().map(|row| read_draft(db, row)).collect()
        })
        .await
    }

    async fn delete_draft(&self, id: &DraftId) -> RepoResult<bool> {
        let id = id.clone();
        self.write(move |db| {
            let Some(invite) = db.row(
                "SELECT invite FROM drafts WHERE id = ?1",
                [id.as_str()],
                |r| Ok(r.get::<_, i64>(0)?),
            )?
            else {
                return Ok(false);
            };
            db.exec("DELETE FROM drafts WHERE id = ?1", [id.as_str()])?;
            db.exec("DELETE FROM invites WHERE id = ?1", [invite])?;
            Ok(true)
        })
        .await
    }

    async fn create_batch(&self, new: &NewBatch) -> RepoResult<()> {
        let mut seen = HashSet::new();
        for (owner, _) in &new.deliveries {
            if !seen.insert(owner) {
                return Err(RepositoryError::Precondition {
                    message: format!("owner `{owner}` appears twice in batch `{}`", new.batch.id),
                });
            }
        }
        drop(seen);
        // The deliveries go in as a statement per chunk over a JSON array of [owner,
        // address] pairs: a statement per delivery spent a third of the store's time
        // on statement overhead, and one array for a million deliveries had SQLite
        // copy and parse 40 MB of JSON at once. Only the pairs (as compact JSON) and
        // the batch's own record are copied into the closure, not the whole batch.
        let chunks: Vec<String> = new
            .deliveries
            .chunks(WRITE_CHUNK)
            .map(|chunk| {
                json_pairs(
                    chunk
                        .iter()
                        .map(|(owner, to)| (owner.as_str(), to.as_str())),
                )
            })
            .collect();
        let batch = new.batch.clone();
        let activity = new.activity.clone();
        self.write(move |db| {
            let b = &batch;
            if db.exists("SELECT 1 FROM batches WHERE id = ?1", [b.id.as_str()])? {
                return Err(Fail::Repo(RepositoryError::AlreadyExists {
                    what: "batch",
                    id: b.id.to_string(),
                }));
            }
            let invite = insert_invite(db, &b.invite)?;
            db.exec(
                "INSERT INTO batches (id, community, invite, sender_name, sender_address,
                     portal_url, token_ttl_seconds, created_at, resend)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                rusqlite::params![
                    b.id.as_str(),
                    b.community.as_str(),
                    invite,
                    b.sender.name,
                    b.sender.address.as_str(),
                    b.portal_url,
                    i64::try_from(b.token_ttl_seconds).unwrap_or(i64::MAX),
                    ts(b.created_at)?,
                    b.resend,
                ],
            )?;
            for deliveries in chunks {
                db.exec(
                    "INSERT INTO deliveries (batch, owner, to_addr, state)
                     SELECT ?1, value ->> 0, value ->> 1, 'pending' FROM json_each(?2)",
                    rusqlite::params![b.id.as_str(), deliveries],
                )?;
            }
            append_activity(db, &activity)?;
            Ok(())
        })
        .await
    }

    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>> {
        let id = id.clone();
        self.read(move |db| {
            let row = db.row(
                &format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1"),
                [id.as_str()],
                batch_row,
            )?;
            row.map(|row| read_batch(db, row)).transpose()
        })
        .await
    }

    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>> {
        let community = community.clone();
        self.read(move |db| {
            let rows = db.rows(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM batches WHERE community = ?1
                     ORDER BY created_at DESC, seq DESC"
                ),
                [community.as_str()],
                batch_row,
            )?;
            rows.into_iter().map(|row| read_batch(db, row)).collect()
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        limit_to: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        let (batch, sender) = (batch.clone(), sender.clone());
        self.write(move |db| {
            let claimed = db.rows_at_most(
                CLAIM,
                rusqlite::params![
                    batch.as_str(),
                    limit(limit_to),
                    ts(now)?,
                    sender.as_str(),
                    ts(now + lease)?
                ],
                limit_to,
                |r| read_delivery(&batch, r),
            )?;
            if claimed.is_empty() {
                require_batch(db, &batch)?;
            }
            Ok(claimed)
        })
        .await
    }

    async fn renew_claims(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let (batch, sender, owners) = (batch.clone(), sender.clone(), owners.to_vec());
        self.write(move |db| {
            let renewed = db.rows_at_most(
                RENEW,
                rusqlite::params![
                    batch.as_str(),
                    json_list(owners.iter().map(OwnerId::as_str)),
                    sender.as_str(),
                    ts(now + lease)?
                ],
                owners.len(),
                |r| Ok(r.get::<_, String>(0)?),
            )?;
            if renewed.is_empty() {
                require_batch(db, &batch)?;
            }
            Ok(refused(owners, &renewed))
        })
        .await
    }

    /// All the outcomes in one transaction: one commit (and one disk sync) for the
    /// group.
    async fn record_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        let (batch, sender, outcomes) = (batch.clone(), sender.clone(), outcomes.to_vec());
        self.write(move |db| {
            require_batch(db, &batch)?;
            let mut refused = Vec::new();
            let mut sent = Vec::new();
            for (owner, outcome) in &outcomes {
                if !record_outcome(db, &batch, &sender, owner, outcome, now)? {
                    refused.push(owner.clone());
                } else if let DeliveryOutcome::Sent { expires_at, .. } = outcome {
                    sent.push((owner, *expires_at));
                }
            }
            let at = ts(now)?;
            // The recorded messages' links supersede their owners' older ones, and
            // count as one more invitation each.
            let owners: Vec<&OwnerId> = sent.iter().map(|(o, _)| *o).collect();
            accept_invitations(db, &batch, &owners, at)?;
            count_invitations(db, &sent, at)?;
            Ok(refused)
        })
        .await
    }

    async fn release_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<OwnerId>> {
        let (batch, sender, owners) = (batch.clone(), sender.clone(), owners.to_vec());
        self.write(move |db| {
            let released = db.rows_at_most(
                RELEASE,
                rusqlite::params![
                    batch.as_str(),
                    json_list(owners.iter().map(OwnerId::as_str)),
                    sender.as_str()
                ],
                owners.len(),
                |r| Ok(r.get::<_, String>(0)?),
            )?;
            if released.is_empty() {
                require_batch(db, &batch)?;
            }
            Ok(refused(owners, &released))
        })
        .await
    }

    async fn held_claims(&self, batch: &BatchId, now: Timestamp) -> RepoResult<HeldClaims> {
        let batch = batch.clone();
        self.read(move |db| {
            require_batch(db, &batch)?;
            let holders = db.rows(HELD_CLAIMS, [batch.as_str()], |r| {
                Ok(ClaimHolder {
                    sender: read_id!(SenderId, r.get::<_, String>(0)?, "deliveries.holder")?,
                    deliveries: usize::try_from(r.get::<_, i64>(1)?)
                        .map_err(|e| bad_row("claim count", e))?,
                    first_until: read_ts(r.get(2)?)?,
                    last_until: read_ts(r.get(3)?)?,
                })
            })?;
            Ok(HeldClaims { now, holders })
        })
        .await
    }

    async fn revoke_claims(&self, batch: &BatchId) -> RepoResult<usize> {
        let batch = batch.clone();
        self.write(move |db| {
            require_batch(db, &batch)?;
            db.exec(
                "UPDATE deliveries SET state = 'pending', state_at = NULL, holder = NULL,
                     lease_until = NULL
                 WHERE batch = ?1 AND state = 'claimed'",
                [batch.as_str()],
            )
        })
        .await
    }

    async fn deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        let batch = batch.clone();
        self.read(move |db| {
            require_batch(db, &batch)?;
            db.rows(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE batch = ?1 ORDER BY owner"
                ),
                [batch.as_str()],
                |r| read_delivery(&batch, r),
            )
        })
        .await
    }

    async fn failed_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.deliveries_in_state(batch, "failed").await
    }

    async fn skipped_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.deliveries_in_state(batch, "skipped").await
    }

    async fn delivery_counts(&self, batch: &BatchId) -> RepoResult<DeliveryCounts> {
        let batch = batch.clone();
        self.read(move |db| {
            require_batch(db, &batch)?;
            let mut counts = DeliveryCounts::default();
            for (state, n) in db.rows(
                "SELECT state, count(*) FROM deliveries WHERE batch = ?1 GROUP BY state",
                [batch.as_str()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )? {
                let n = usize::try_from(n).map_err(|e| bad_row("delivery count", e))?;
                match state.as_str() {
                    "pending" => counts.pending = n,
                    "claimed" => counts.claimed = n,
                    "sent" => counts.sent = n,
                    "failed" => counts.failed = n,
                    "skipped" => counts.skipped = n,
                    other => return Err(bad_row("deliveries.state", other)),
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn requeue_failed(&self, batch: &BatchId) -> RepoResult<usize> {
        let batch = batch.clone();
        self.write(move |db| {
            require_batch(db, &batch)?;
            db.exec(
                "UPDATE deliveries SET state = 'pending', state_at = NULL, error = NULL,
                     unreachable_runs = 0
                 WHERE batch = ?1 AND state = 'failed'",
                [batch.as_str()],
            )
        })
        .await
    }

    async fn issue_token(&self, token: &TokenRecord) -> RepoResult<()> {
        let token = token.clone();
        self.write(move |db| issue_token_in(db, &token)).await
    }

    /// All the tokens in one transaction: one commit for the chunk, all or nothing.
    async fn issue_tokens(&self, tokens: &[TokenRecord]) -> RepoResult<()> {
        let tokens = tokens.to_vec();
        self.write(move |db| {
            for token in &tokens {
                issue_token_in(db, token)?;
            }
            Ok(())
        })
        .await
    }

    async fn invitation_states(
        &self,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let expected = owners.len();
        let ids = json_list(owners.iter().map(OwnerId::as_str));
        self.read(move |db| {
            db.rows_at_most(
                "SELECT owner, first_at, last_at, count, expires_at FROM invitation_states
                 WHERE owner IN (SELECT value FROM json_each(?1))",
                [ids],
                expected,
                read_invitation_state,
            )
        })
        .await
    }

    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        let hash = *hash;
        self.read(move |db| read_token(db, &hash)).await
    }

    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome> {
        let hash = *hash;
        self.write(move |db| {
            let at = ts(now)?;
            // The compare-and-set: of two redeems of one token, one changes the row.
            let won = db.exec(
                "UPDATE tokens SET state = 'redeemed', state_at = ?2
                 WHERE hash = ?1 AND state = 'live' AND expires_at > ?2",
                rusqlite::params![&hash.0[..], at],
            )? == 1;
            let Some(token) = read_token(db, &hash)? else {
                return Ok(RedeemOutcome::Rejected(TokenRejection::Unknown));
            };
            if !won {
                return Ok(RedeemOutcome::Rejected(
                    token
                        .check(now)
                        .err()
                        .unwrap_or(TokenRejection::AlreadyUsed),
                ));
            }
            // Closing the owner's open invitations (this token's, live, and any
            // pending one) revokes their other tokens (the schema's trigger).
            close_open_invitations(db, &token.owner, at)?;
            db.exec(
                "INSERT INTO registrations_owed (token, owner, batch, sent_to, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    &hash.0[..],
                    token.owner.as_str(),
                    token.batch.as_str(),
                    token.sent_to,
                    at
                ],
            )?;
            Ok(RedeemOutcome::Redeemed { token })
        })
        .await
    }

    async fn owed_registrations(&self) -> RepoResult<Vec<OwedRegistration>> {
        self.read(|db| {
            db.rows(
                "SELECT token, owner, batch, sent_to, at FROM registrations_owed ORDER BY at",
                [],
                |r| {
                    let token: Vec<u8> = r.get(0)?;
                    let token: [u8; 32] = token
                        .try_into()
                        .map_err(|_| bad_row("registrations_owed.token", "not 32 bytes"))?;
                    Ok(OwedRegistration {
                        token: TokenHash(token),
                        owner: read_id!(
                            OwnerId,
                            r.get::<_, String>(1)?,
                            "registrations_owed.owner"
                        )?,
                        batch: read_id!(
                            BatchId,
                            r.get::<_, String>(2)?,
                            "registrations_owed.batch"
                        )?,
                        sent_to: r.get(3)?,
                        at: read_ts(r.get(4)?)?,
                    })
                },
            )
        })
        .await
    }

    async fn settle_registration(
        &self,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        let token = *token;
        let activity = activity.cloned();
        self.write(move |db| {
            let settled = db.exec(
                "DELETE FROM registrations_owed WHERE token = ?1",
                [&token.0[..]],
            )? == 1;
            if settled && let Some(entry) = &activity {
                append_activity(db, entry)?;
            }
            Ok(settled)
        })
        .await
    }

    async fn answer_redeem(&self, token: &TokenHash, now: Timestamp) -> RepoResult<bool> {
        let token = *token;
        self.write(move |db| {
            Ok(db.exec(
                "UPDATE tokens SET answered_at = ?2
                 WHERE hash = ?1 AND state = 'redeemed' AND answered_at IS NULL",
                rusqlite::params![&token.0[..], ts(now)?],
            )? == 1)
        })
        .await
    }

    async fn revoke_tokens(&self, owners: &[OwnerId], now: Timestamp) -> RepoResult<usize> {
        let owners = json_list(owners.iter().map(OwnerId::as_str));
        self.write(move |db| {
            // Closing an invitation revokes its pending and live tokens (the schema's
            // trigger).
            let revoked = db.row(
                "SELECT count(*) FROM tokens t JOIN invitations i ON i.id = t.invitation
                 WHERE i.state <> 'closed' AND (t.state = 'live' OR t.state = 'pending')
                   AND i.owner IN (SELECT value FROM json_each(?1))",
                [&owners],
                |r| Ok(r.get::<_, i64>(0)?),
            )?;
            db.exec(
                "UPDATE invitations SET state = 'closed', closed_at = ?2
                 WHERE state <> 'closed' AND owner IN (SELECT value FROM json_each(?1))",
                rusqlite::params![owners, ts(now)?],
            )?;
            Ok(usize::try_from(revoked.unwrap_or(0)).unwrap_or(0))
        })
        .await
    }

    async fn append_activity(&self, entry: &ActivityEntry) -> RepoResult<()> {
        let entry = entry.clone();
        self.write(move |db| append_activity(db, &entry)).await
    }

    async fn activity(
        &self,
        community: &CommunityId,
        page: Page,
    ) -> RepoResult<Vec<ActivityEntry>> {
        let community = community.clone();
        self.read(move |db| {
            db.rows(
                "SELECT at, details FROM activity WHERE community = ?1
                 ORDER BY at DESC, seq DESC LIMIT ?2 OFFSET ?3",
                rusqlite::params![community.as_str(), limit(page.limit), limit(page.offset)],
                |r| {
                    let details: String = r.get(1)?;
                    Ok(ActivityEntry {
                        community: community.clone(),
                        at: read_ts(r.get(0)?)?,
                        kind: serde_json::from_str(&details)
                            .map_err(|e| bad_row("activity.details", e))?,
                    })
                },
            )
        })
        .await
    }
}

fn put_community(db: &Db<'_>, c: &Community) -> Res<()> {
    db.exec(
        "INSERT INTO communities (id, name, reply_to, time_zone, logo_url, accent_color)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, reply_to = excluded.reply_to,
             time_zone = excluded.time_zone, logo_url = excluded.logo_url,
             accent_color = excluded.accent_color",
        rusqlite::params![
            c.id.as_str(),
            c.name,
            c.reply_to.as_ref().map(EmailAddress::as_str),
            c.time_zone.as_ref().map(TimeZoneName::as_str),
            c.branding.logo_url(),
            c.branding.accent_color(),
        ],
    )?;
    Ok(())
}

/// `upsert_owners` inside a transaction: each owner merged onto the stored one.
fn upsert_owners_in(db: &Db<'_>, owners: &[Owner], now: Timestamp) -> Res<()> {
    let now = ts(now)?;
    let ids: Vec<&str> = owners.iter().map(|o| o.id.as_str()).collect();
    let mut stored = owners_by_id(db, &ids)?;
    for incoming in owners {
        let (merged, email_changed) = Owner::merge_from_host(stored.get(&incoming.id), incoming);
        if email_changed {
            close_open_invitations(db, &merged.id, now)?;
        }
        put_owner(db, &merged)?;
        stored.insert(merged.id.clone(), merged);
    }
    Ok(())
}

// ----- Import sessions ---------------------------------------------------------------

/// One step of an import, for the thread that holds its transaction.
enum ImportStep {
    Communities(Vec<Community>),
    Owners(Vec<Owner>),
    Commit,
}

type ImportReply = tokio::sync::oneshot::Sender<RepoResult<()>>;

/// An import into a [`SqliteRepository`]: each call is handed to the thread that holds
/// the session's transaction, and waits for its answer.
struct SqliteImport {
    steps: Option<std::sync::mpsc::SyncSender<(ImportStep, ImportReply)>>,
    store: String,
}

fn session_ended(store: &str) -> RepositoryError {
    RepositoryError::Backend {
        store: store.to_owned(),
        source: Box::new(Message(
            "the import session ended (after an error, nothing of it was kept)".into(),
        )),
    }
}

impl SqliteImport {
    async fn step(&mut self, step: ImportStep) -> RepoResult<()> {
        let steps = self
            .steps
            .as_ref()
            .ok_or_else(|| session_ended(&self.store))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        // The thread answers each step before the next is sent: the queue is empty,
        // so this never blocks.
        if steps.send((step, reply)).is_err() {
            self.steps = None;
            return Err(session_ended(&self.store));
        }
        let result = answer
            .await
            .unwrap_or_else(|_| Err(session_ended(&self.store)));
        if result.is_err() {
            self.steps = None;
        }
        result
    }
}

#[async_trait]
impl ImportSession for SqliteImport {
    async fn upsert_communities(&mut self, communities: &[Community]) -> RepoResult<()> {
        self.step(ImportStep::Communities(communities.to_vec()))
            .await
    }

    async fn upsert_owners(&mut self, owners: &[Owner]) -> RepoResult<()> {
        self.step(ImportStep::Owners(owners.to_vec())).await
    }

    async fn commit(mut self: Box<Self>) -> RepoResult<()> {
        self.step(ImportStep::Commit).await
    }
}

impl Inner {
    /// The thread of an import session: opens its connection, begins, and runs each
    /// step in the transaction until the commit, an error (rolled back, and the
    /// session ends) or the session's end (dropped: rolled back).
    fn import(
        &self,
        now: Timestamp,
        queue: std::sync::mpsc::Receiver<(ImportStep, ImportReply)>,
        ready: ImportReply,
    ) {
        let mut conn = match self.session_connection() {
            Ok(conn) => conn,
            Err(e) => {
                let _ = ready.send(Err(self.fail(Fail::Sql(e))));
                return;
            }
        };
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let _ = ready.send(Err(self.fail(Fail::Sql(e))));
                return;
            }
        };
        if ready.send(Ok(())).is_err() {
            return;
        }
        let db = Db {
            conn: &tx,
            count: &self.statements,
        };
        while let Ok((step, reply)) = queue.recv() {
            let result = match step {
                ImportStep::Communities(communities) => {
                    communities.iter().try_for_each(|c| put_community(&db, c))
                }
                ImportStep::Owners(owners) => upsert_owners_in(&db, &owners, now),
                ImportStep::Commit => {
                    let _ = reply.send(tx.commit().map_err(|e| self.fail(Fail::Sql(e))));
                    return;
                }
            };
            if let Err(e) = result {
                let _ = reply.send(Err(self.fail(e)));
                return; // the transaction rolls back as it is dropped
            }
            let _ = reply.send(Ok(()));
        }
    }

    /// A write connection of its own, set up as the shared writer is.
    fn session_connection(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")?;
        Ok(conn)
    }
}

/// Records one outcome of a delivery of a batch known to exist, if `sender` holds its
/// claim: the compare-and-set from `claimed` by that holder. Returns whether it was
/// recorded. (A sent message's invitation state is written for the whole group, by
/// [`count_invitations`].)
fn record_outcome(
    db: &Db<'_>,
    batch: &BatchId,
    sender: &SenderId,
    owner: &OwnerId,
    outcome: &DeliveryOutcome,
    now: Timestamp,
) -> Res<bool> {
    let at = ts(now)?;
    let (new_state, error, attempts, skip) = match outcome {
        DeliveryOutcome::Sent { attempts, .. } => ("sent", None, *attempts, None),
        DeliveryOutcome::Failed { error, attempts } => {
            ("failed", Some(error.as_str()), *attempts, None)
        }
        DeliveryOutcome::Unreachable { attempts } => {
            let moved = db.exec(
                "UPDATE deliveries SET state = 'pending', state_at = NULL, holder = NULL,
                     lease_until = NULL, attempts = min(attempts + ?3, 4294967295),
                     unreachable_runs = min(unreachable_runs + 1, 4294967295)
                 WHERE batch = ?1 AND owner = ?2 AND state = 'claimed' AND holder = ?4",
                rusqlite::params![
                    batch.as_str(),
                    owner.as_str(),
                    i64::from(*attempts),
                    sender.as_str()
                ],
            )?;
            return Ok(moved == 1);
        }
        DeliveryOutcome::Skipped { reason } => ("skipped", None, 0, Some(reason.code())),
    };
    let moved = db.exec(
        "UPDATE deliveries SET state = ?3, state_at = ?4, error = ?5,
             attempts = min(attempts + ?6, 4294967295), holder = NULL, lease_until = NULL,
             skip_reason = ?8
         WHERE batch = ?1 AND owner = ?2 AND state = 'claimed' AND holder = ?7",
        rusqlite::params![
            batch.as_str(),
            owner.as_str(),
            new_state,
            at,
            error,
            i64::from(attempts),
            sender.as_str(),
            skip
        ],
    )?;
    Ok(moved == 1)
}

/// One more invitation for each owner whose message was recorded as sent at `at`,
/// with its link's expiry: [`InvitationState::after`] for a whole group in one
/// statement (an owner appears once in a group: one delivery per batch and owner).
fn count_invitations(db: &Db<'_>, sent: &[(&OwnerId, Timestamp)], at: i64) -> Res<()> {
    if sent.is_empty() {
        return Ok(());
    }
    let mut pairs = Vec::with_capacity(sent.len());
    for (owner, expires_at) in sent {
        pairs.push((owner.as_str(), ts(*expires_at)?));
    }
    db.exec(
        "INSERT INTO invitation_states (owner, first_at, last_at, count, expires_at)
         SELECT value ->> 0, ?1, ?1, 1, value ->> 1 FROM json_each(?2) WHERE true
         ON CONFLICT (owner) DO UPDATE SET
             last_at = excluded.last_at, count = min(count + 1, 4294967295),
             expires_at = excluded.expires_at",
        rusqlite::params![at, json_array(pairs)],
    )?;
    Ok(())
}

/// One row of `invitation_states`: (owner, first, last, count, expires).
fn read_invitation_state(row: &Row<'_>) -> Res<(OwnerId, InvitationState)> {
    Ok((
        read_id!(OwnerId, row.get::<_, String>(0)?, "invitation_states.owner")?,
        InvitationState {
            first_at: read_ts(row.get(1)?)?,
            last_at: read_ts(row.get(2)?)?,
            count: u32::try_from(row.get::<_, i64>(3)?)
                .map_err(|e| bad_row("invitation_states.count", e))?,
            expires_at: read_ts(row.get(4)?)?,
        },
    ))
}

/// The condition on the registered flag that an access tab asks of the owners' own
/// fields (see [`OwnerFilter::matches_owner`]).
fn registered_condition(access: AccessFilter) -> &'static str {
    match access {
        AccessFilter::All => "",
        AccessFilter::Unregistered | AccessFilter::Invited => " AND registered = 0",
        AccessFilter::Registered => " AND registered = 1",
    }
}

/// The owner's open invitation of a batch, opened in `state` when there is none.
fn open_invitation(db: &Db<'_>, owner: &str, batch: &str, state: &str) -> Res<i64> {
    let open = db.row(
        "SELECT id FROM invitations WHERE owner = ?1 AND batch = ?2 AND state <> 'closed'",
        [owner, batch],
        |r| Ok(r.get::<_, i64>(0)?),
    )?;
    if let Some(id) = open {
        return Ok(id);
    }
    db.exec(
        "INSERT INTO invitations (owner, batch, state) VALUES (?1, ?2, ?3)",
        [owner, batch, state],
    )?;
    Ok(db.last_insert_rowid())
}

/// The listed owners that a fenced write did not touch.
fn refused(listed: Vec<OwnerId>, done: &[String]) -> Vec<OwnerId> {
    if done.len() == listed.len() {
        return Vec::new();
    }
    let done: HashSet<&str> = done.iter().map(String::as_str).collect();
    listed
        .into_iter()
        .filter(|o| !done.contains(o.as_str()))
        .collect()
}

/// Claims a chunk in one statement: the chosen rows are pending ones by owner (their
/// `lease_until` is NULL, so ordering by it first keeps the index's order and needs no
/// sort), then run-out leases by their end; the `UPDATE`'s own condition is the
/// compare-and-set. RETURNING gives the rows in no particular order.
const CLAIM: &str = concat!(
    "UPDATE deliveries SET state = 'claimed', state_at = ?3, holder = ?4, lease_until = ?5
     WHERE batch = ?1 AND owner IN (
         SELECT owner FROM (
             SELECT owner FROM deliveries WHERE batch = ?1 AND state = 'pending'
              ORDER BY lease_until, owner LIMIT ?2)
         UNION ALL
         SELECT owner FROM (
             SELECT owner FROM deliveries WHERE batch = ?1 AND state = 'claimed'
                AND lease_until <= ?3
              ORDER BY lease_until, owner LIMIT ?2)
         LIMIT ?2)
       AND (state = 'pending' OR (state = 'claimed' AND lease_until <= ?3))
     RETURNING ",
    delivery_columns!()
);

/// Renews a sender's leases on the listed deliveries in one statement.
const RENEW: &str = "UPDATE deliveries SET lease_until = ?4
     WHERE batch = ?1 AND owner IN (SELECT value FROM json_each(?2))
       AND state = 'claimed' AND holder = ?3
     RETURNING owner";

/// Gives a sender's claims on the listed deliveries back, in one statement.
const RELEASE: &str =
    "UPDATE deliveries SET state = 'pending', state_at = NULL, holder = NULL, lease_until = NULL
     WHERE batch = ?1 AND owner IN (SELECT value FROM json_each(?2))
       AND state = 'claimed' AND holder = ?3
     RETURNING owner";

/// Who holds claims on a batch. Without statistics SQLite would scan the whole batch
/// by its key (the index lacks `holder`); the claimed rows are few, so they are read
/// through the state index and looked up.
const HELD_CLAIMS: &str = "SELECT holder, count(*), min(lease_until), max(lease_until)
     FROM deliveries INDEXED BY deliveries_by_state
     WHERE batch = ?1 AND state = 'claimed' GROUP BY holder";

fn issue_token_in(db: &Db<'_>, token: &TokenRecord) -> Res<()> {
    let owner = token.owner.as_str();
    let batch = token.batch.as_str();
    let (state, state_at) = match token.state {
        TokenState::Pending => ("pending", None),
        TokenState::Live => ("live", None),
        TokenState::Revoked { at } => ("revoked", Some(ts(at)?)),
        TokenState::Redeemed { at } => ("redeemed", Some(ts(at)?)),
    };
    let invitation = match token.state {
        // Stored at claim: it joins the owner's open invitation of this batch (the
        // schema allows one), or opens a pending one, and closes nothing.
        TokenState::Pending => open_invitation(db, owner, batch, "pending")?,
        // Accepted already: it supersedes the owner's live invitation of another
        // batch (closing it revokes its tokens, a trigger) and joins, or makes live,
        // this batch's.
        TokenState::Live => {
            let at = ts(token.issued_at)?;
            accept_invitations(db, &token.batch, &[&token.owner], at)?;
            open_invitation(db, owner, batch, "live")?
        }
        // A token stored already spent gets an invitation of its own, closed.
        TokenState::Revoked { at } | TokenState::Redeemed { at } => {
            db.exec(
                "INSERT INTO invitations (owner, batch, state, closed_at)
                 VALUES (?1, ?2, 'closed', ?3)",
                rusqlite::params![owner, batch, ts(at)?],
            )?;
            db.last_insert_rowid()
        }
    };
    // A known hash is refused here rather than looked up first: the error rolls the
    // whole call back, invitation changes included.
    let inserted = db.exec(
        "INSERT INTO tokens (hash, invitation, issued_at, expires_at, state, state_at, sent_to)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (hash) DO NOTHING",
        rusqlite::params![
            &token.hash.0[..],
            invitation,
            ts(token.issued_at)?,
            ts(token.expires_at)?,
            state,
            state_at,
            token.sent_to
        ],
    )?;
    if inserted == 0 {
        return Err(Fail::Repo(RepositoryError::AlreadyExists {
            what: "token",
            id: token.hash.to_hex(),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of an error and every cause beneath it.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(cause) = next {
            out.push(cause.to_string());
            next = cause.source();
        }
        out
    }

    /// A database that reaches its size limit (SQLite's `max_page_count`, which fails
    /// a write exactly as a full disk does) says "disk full", keeps SQLite's error as
    /// the cause, and keeps nothing of the call.
    #[tokio::test]
    async fn a_full_database_says_disk_full_and_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let repo = SqliteRepository::open(dir.path().join("full.db"))
            .await
            .unwrap();
        let community = Community::new(CommunityId::new("c").unwrap(), "C");
        repo.upsert_community(&community).await.unwrap();
        {
            let conn = repo.inner.writer.lock().unwrap();
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap();
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .unwrap();
        }
        let owners: Vec<Owner> = (0..2000)
            .map(|i| {
                Owner::new(
                    OwnerId::new(format!("o{i}")).unwrap(),
                    community.id.clone(),
                    PropertyId::new(format!("u{i}")).unwrap(),
                    "A long enough first name",
                    "and a last name",
                )
                .with_primary_email(format!("owner{i}@example.org"))
            })
            .collect();
        let err = repo
            .upsert_owners(&owners, Timestamp::from_unix_seconds(0))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RepositoryError::Unavailable { .. }),
            "{err:?}"
        );
        let text = chain(&err);
        assert_eq!(text[1], "disk full", "{text:?}");
        let mut found = None;
        let mut next = std::error::Error::source(&err);
        while let Some(cause) = next {
            found = found.or(cause.downcast_ref::<rusqlite::Error>());
            next = cause.source();
        }
        assert_eq!(
            found.and_then(rusqlite::Error::sqlite_error_code),
            Some(ErrorCode::DiskFull),
            "the rusqlite error is in the chain: {text:?}"
        );
        let stored = repo
            .community_owners(&community.id, &OwnerFilter::all())
            .await
            .unwrap();
        assert!(stored.is_empty(), "nothing of the failed call is kept");
    }

    /// The plan SQLite picks for a statement, one line per step.
    /// Parameters are bound as NULL, so the statements the adapter runs can be
    /// planned as they are written.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn set_based_lookups_use_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = SqliteRepository::open(dir.path().join("plan.db"))
            .await
            .unwrap();
        let conn = repo.inner.writer.lock().unwrap();
        let holders = plan(&conn, EMAIL_HOLDERS);
        assert!(holders.contains("INDEX owners_by_email_key"), "{holders}");
        let shared = plan(&conn, SHARED_EMAIL_HOLDERS);
        assert!(
            shared.contains("SEARCH o2") && shared.contains("COVERING INDEX owners_by_email_key"),
            "the second holder is found in the index alone: {shared}"
        );
        let roster = plan(
            &conn,
            &format!("SELECT {OWNER_COLUMNS} FROM owners WHERE community = 'c'"),
        );
        assert!(roster.contains("INDEX owners_by_community"), "{roster}");
        let claim = plan(&conn, CLAIM);
        assert!(
            claim.contains("USING PRIMARY KEY (batch=? AND owner=?)"),
            "the chosen rows are updated by key: {claim}"
        );
        assert_eq!(
            claim.matches("INDEX deliveries_by_state").count(),
            2,
            "pending ones and run-out leases are both found in the index: {claim}"
        );
        assert!(
            !claim.contains("TEMP B-TREE FOR ORDER BY"),
            "claims need no sort: {claim}"
        );
        for sql in [RENEW, RELEASE] {
            let plan = plan(&conn, sql);
            assert!(
                plan.contains("USING PRIMARY KEY (batch=? AND owner=?)"),
                "{sql}: {plan}"
            );
        }
        let held = plan(&conn, HELD_CLAIMS);
        assert!(held.contains("INDEX deliveries_by_state"), "{held}");
    }

    /// Writing a row checks the table's CHECK constraints; an `IN` list of three or
    /// more values there makes SQLite build a temporary index on every write, which
    /// cost a tenth of a send's CPU. No table's insert may open one.
    #[tokio::test]
    async fn writing_a_row_opens_no_temporary_index() {
        let dir = tempfile::tempdir().unwrap();
        let repo = SqliteRepository::open(dir.path().join("checks.db"))
            .await
            .unwrap();
        let conn = repo.inner.writer.lock().unwrap();
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(tables.len() >= 8, "{tables:?}");
        for table in tables {
            let columns: Vec<String> = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let sql = format!(
                "EXPLAIN INSERT INTO {table} ({}) VALUES ({})",
                columns.join(", "),
                vec!["?"; columns.len()].join(", ")
            );
            let opcodes: Vec<String> = conn
                .prepare(&sql)
                .unwrap()
                .query_map(
                    rusqlite::params_from_iter(vec![rusqlite::types::Null; columns.len()]),
                    |r| r.get(1),
                )
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(
                !opcodes.iter().any(|op| op == "OpenEphemeral"),
                "{table}: an insert opens a temporary index: {opcodes:?}"
            );
        }
    }
}
