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

//!
//! # The files
//!
//! This file holds [`SqliteRepository`], its opening and the plumbing every call runs
//! through (a read on a pooled read-only connection, a write as `BEGIN IMMEDIATE` on
//! the one writer). `schema` has the migrations, the application id, the Rust re-key
//! step and the identity checks that refuse a file; `connection` opens the
//! connections (busy time-out, reader pool, the probe that reads a file before
//! touching it, its side files); `fail` maps SQLite's errors to
//! [`RepositoryError`]; `rows` has the per-call view of a connection and the
//! mappers between columns and the domain's types. The two ports: `directory`
//! ([`OwnerRepository`], [`OwnerDirectory`] and the import session) and `store`
//! ([`InvitationStore`]: drafts, batches and deliveries with their claims in
//! `store::claims`, tokens and invitations in `store::tokens`).

mod connection;
mod directory;
mod fail;
mod rows;
mod schema;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[cfg(doc)]
use crate::domain::{DELIVERED_KEY_VERSION, delivered_key};
#[cfg(doc)]
use crate::repository::{InvitationStore, OwnerDirectory, OwnerRepository};
use crate::repository::{RepoResult, RepositoryError};

use connection::Inner;
use fail::{Res, join_error};
use rows::Db;

pub use schema::SCHEMA_VERSION;

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
