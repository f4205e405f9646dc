//! The connections of a [`SqliteHandle`](super::SqliteHandle): opening a file
//! (the probe that reads it before touching it, WAL mode, the migrations), the one
//! writer, the pool of read-only readers, the busy time-out, and the side files
//! SQLite keeps beside a WAL-mode database.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::fail::{Fail, Message, Res, classify};
use super::parts::Parts;
use super::rows::Db;
use super::schema::{Part, identity, migrate, plan};
use crate::repository::{RepoResult, RepositoryError};

/// How long a call waits for another connection's write lock before giving up with
/// [`RepositoryError::Unavailable`].
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle read-only connections kept for reuse.
pub(super) const MAX_IDLE_READERS: usize = 4;

pub(super) struct Inner {
    /// How the handle names itself ([`Parts::NAME`]).
    pub(super) name: &'static str,
    pub(super) path: PathBuf,
    pub(super) writer: Mutex<Connection>,
    pub(super) readers: Mutex<Vec<Connection>>,
    pub(super) statements: AtomicU64,
}

impl Inner {
    pub(super) fn store(&self) -> String {
        format!("{} {}", self.name, self.path.display())
    }

    pub(super) fn fail(&self, e: Fail) -> RepositoryError {
        match e {
            Fail::Repo(e) => e,
            Fail::Sql(e) => classify(&self.store(), e),
        }
    }

    /// Opens `path` for the parts `P` names: probes an existing file, sets up the
    /// writer (WAL mode, foreign keys, full sync) and migrates the parts.
    pub(super) fn open<P: Parts>(path: PathBuf) -> RepoResult<Inner> {
        let parts: Vec<Part> = [(P::DIRECTORY, Part::Directory), (P::STORE, Part::Store)]
            .into_iter()
            .filter_map(|(wanted, part)| wanted.then_some(part))
            .collect();
        let store = format!("{} {}", P::NAME, path.display());
        let sql = |e| classify(&store, e);
        let has_content = std::fs::metadata(&path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        if has_content {
            // Look before touching: a damaged or newer file, or one where a name a
            // part needs is taken, is refused unchanged.
            probe(&path, &store, &parts).map_err(|e| match e {
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
        let mode = wal_mode(&writer).map_err(sql)?;
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
        migrate(&path, &store, &mut writer, &parts).map_err(|e| match e {
            Fail::Repo(e) => e,
            Fail::Sql(e) => sql(e),
        })?;
        Ok(Inner {
            name: P::NAME,
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            statements: AtomicU64::new(0),
        })
    }

    pub(super) fn reader(&self) -> Res<Connection> {
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

    pub(super) fn read<T>(&self, f: impl FnOnce(&Db<'_>) -> Res<T>) -> RepoResult<T> {
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

    pub(super) fn write<T>(&self, f: impl FnOnce(&Db<'_>) -> Res<T>) -> RepoResult<T> {
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

impl Inner {
    /// A write connection of its own, set up as the shared writer is.
    pub(super) fn session_connection(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")?;
        Ok(conn)
    }
}

/// Reads a file's identity through a read-only connection, creating nothing beside
/// it: a file refused here is left as it was, with no `-wal` or `-shm` of ours.
///
/// Even a read-only connection to a WAL-mode file creates its `-wal` and `-shm`. With
/// neither there, the main file holds the whole database, so it is read as immutable
/// (no locks, no side files). When they exist (another connection has the file open,
/// or one crashed), the file is read through them, and any that this read created is
/// removed if the file is refused.
pub(super) fn probe(path: &Path, store: &str, parts: &[Part]) -> Res<()> {
    let sides = side_files(path);
    let existed: Vec<bool> = sides.iter().map(|p| p.exists()).collect();
    let result = if existed.iter().any(|e| *e) {
        probe_with(
            path,
            store,
            parts,
            path.as_os_str().to_owned(),
            OpenFlags::empty(),
        )
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
        probe_with(path, store, parts, uri, OpenFlags::SQLITE_OPEN_URI)
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

pub(super) fn probe_with(
    path: &Path,
    store: &str,
    parts: &[Part],
    name: std::ffi::OsString,
    flags: OpenFlags,
) -> Res<()> {
    let conn = Connection::open_with_flags(
        name,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | flags,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let id = identity(&conn)?;
    plan(path, store, &id, parts).map(drop)
}

/// The files SQLite keeps beside a WAL-mode database.
pub(super) fn side_files(path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// A path as the path part of a `file:` URI: bytes other than unreserved characters
/// and `/` are percent-encoded (a `?`, `#` or `%` in a file name means itself).
pub(super) fn uri_path(path: &Path) -> String {
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

/// Switches the writer to WAL mode and gives the mode the file is in. Switching a new
/// file takes its exclusive lock, and when another connection is switching the same
/// file at that moment SQLite answers `SQLITE_BUSY` at once instead of calling the
/// busy handler (waiting could deadlock the two): opens of one new file at once then
/// failed. The switch is tried again, for as long as the busy time-out.
fn wal_mode(writer: &Connection) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}
