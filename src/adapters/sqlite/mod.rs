//! The two storage ports in SQLite (feature `sqlite`): [`SqliteRepository`] (both, in
//! one file), [`SqliteDirectory`] (the directory: [`OwnerRepository`] and
//! [`OwnerDirectory`]) and [`SqliteStore`] (the workflow's state:
//! [`InvitationStore`]), three handles of one type, [`SqliteHandle`].
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
//! Two parts, each in tables of its own, so that one file can hold a host's own
//! tables, a directory and a store: the directory's (`owner_access_communities`,
//! `owner_access_owners`) and the store's (`owner_access_drafts`,
//! `owner_access_batches`, `owner_access_deliveries`, `owner_access_tokens`, …). Every
//! table, index and trigger the crate creates is named `owner_access_…`, and the
//! crate touches nothing else. Each part has its own embedded migrations and its
//! version in `owner_access_schema (part, version)` (rows `directory` and `store`);
//! a handle sets up and migrates only the parts it serves, in one `BEGIN IMMEDIATE`
//! transaction, so two handles or two processes opening one file at once migrate it
//! once. No table of the store refers to the directory's, and no query of the store
//! joins them: the directory may be a host's own tables, elsewhere.
//!
//! A host's file keeps its `PRAGMA application_id` and `user_version`; a new file gets
//! this crate's application id and `user_version` [`SCHEMA_VERSION`] (1000: versioned
//! per part). A file of the whole-file schema that came before (this crate's
//! application id, `user_version` 1 to 13, unprefixed tables) is migrated to 13 by
//! its old steps, then its tables are renamed into the two parts at version 1. Opening
//! switches the file to WAL mode (a setting of the file, kept after).
//!
//! The schema itself enforces (not only this code):
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
//! A file refused as damaged, or as written by a newer version of this crate (the whole
//! file, or a part), is [`RepositoryError::Corrupt`]; one where a name a part needs is
//! taken by another object is [`RepositoryError::NameTaken`]; either is left exactly
//! as it was. A busy, full, read-only or unreachable file is
//! [`RepositoryError::Unavailable`], any other SQLite failure
//! [`RepositoryError::Backend`]; both keep the cause as their source, named for what
//! it means (`disk full`, `read-only file`, `database is locked`, `cannot open
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
//! This file holds [`SqliteHandle`], its opening and the plumbing every call runs
//! through (a read on a pooled read-only connection, a write as `BEGIN IMMEDIATE` on
//! the one writer); [`parts`] the type parameter that says which parts a handle
//! serves. `schema` has each part's migrations, the checks that decide what opening
//! a file does or refuse it, and in `schema::legacy` the whole-file schema's closed
//! chain (its SQL, the Rust re-key step, the renaming into parts); `connection` opens the
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
pub mod parts;
mod rows;
mod schema;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::marker::PhantomData;
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
use parts::Parts;
use rows::Db;

pub use schema::{DIRECTORY_VERSION, SCHEMA_VERSION, STORE_VERSION};

/// Both ports in one SQLite file: [`OwnerRepository`] with [`OwnerDirectory`] (the
/// directory part) and [`InvitationStore`] (the store part). What the CLI, the
/// quickstart and the web admin use.
pub type SqliteRepository = SqliteHandle<parts::Both>;

/// The directory part alone ([`OwnerRepository`] and [`OwnerDirectory`]): communities
/// and owners in tables of their own, which may share a file with a store and a
/// host's tables.
pub type SqliteDirectory = SqliteHandle<parts::Directory>;

/// The store part alone ([`InvitationStore`]): the workflow's state in tables of its
/// own, for a host that keeps its owners itself, possibly in the same file.
pub type SqliteStore = SqliteHandle<parts::Store>;

/// A durable handle on one SQLite file, serving the parts of the schema `P` names
/// (feature `sqlite`): [`SqliteRepository`] (both), [`SqliteDirectory`],
/// [`SqliteStore`].
///
/// Open it with [`open`](Self::open), which sets up or migrates only those parts.
/// Cloning is cheap: clones share the connections. Every method runs on Tokio's
/// blocking pool, so it needs a Tokio runtime (either flavour). Several handles and
/// several processes may use one file at once (a store and a directory, or a store
/// and the host's own connections); writes serialise on the file's lock (waiting up
/// to 10 s, then [`RepositoryError::Unavailable`]).
///
/// See the [module docs](self) for the schema and what it enforces.
pub struct SqliteHandle<P: Parts> {
    inner: Arc<Inner>,
    parts: PhantomData<fn() -> P>,
}

impl<P: Parts> Clone for SqliteHandle<P> {
    fn clone(&self) -> Self {
        SqliteHandle {
            inner: self.inner.clone(),
            parts: PhantomData,
        }
    }
}

impl<P: Parts> fmt::Display for SqliteHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", P::NAME, self.inner.path.display())
    }
}

impl<P: Parts> fmt::Debug for SqliteHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(P::NAME)
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl<P: Parts> SqliteHandle<P> {
    /// Opens the database at `path` for the parts `P` names, creating the file when it
    /// does not exist, and each part's tables when the file does not have them yet
    /// (beside whatever else it holds: a host's own tables are left alone), and
    /// applying any migration a part lacks. A file of the whole-file schema (before
    /// the parts) is migrated to them first.
    ///
    /// # Errors
    /// - [`RepositoryError::Corrupt`] when the file is not a SQLite database, is
    ///   damaged, or was written by a newer version of this crate (the whole file, or
    ///   one of the parts opened). The file is then left exactly as it was.
    /// - [`RepositoryError::NameTaken`] when a table, index or trigger name a part
    ///   needs is taken by another object in the file. The file is left exactly as it
    ///   was.
    /// - [`RepositoryError::Unavailable`] when the file cannot be opened or created
    ///   (a missing directory, no permission) or stays locked by another process
    ///   longer than the busy timeout: the same call may succeed later.
    /// - [`RepositoryError::Backend`] for any other SQLite failure, or when the file
    ///   system cannot hold a WAL-mode database.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, RepositoryError> {
        let path = path.as_ref().to_path_buf();
        let inner = tokio::task::spawn_blocking(move || Inner::open::<P>(path))
            .await
            .map_err(|e| join_error(P::NAME, e))??;
        Ok(SqliteHandle {
            inner: Arc::new(inner),
            parts: PhantomData,
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
