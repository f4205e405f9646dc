//! The PostgreSQL adapters (feature `postgres`): the workflow's state
//! ([`PostgresStore`], an [`InvitationStore`]), the crate's own owners
//! ([`PostgresDirectory`], an [`OwnerRepository`] and [`OwnerDirectory`]), or both in
//! one value ([`PostgresRepository`], as [`SqliteRepository`](crate::SqliteRepository)
//! is for SQLite).
//!
//! Built on `tokio-postgres` with a `deadpool-postgres` pool; TLS on rustls with the
//! *ring* provider, as the URL's `sslmode` asks ([`PostgresSettings`]). Many
//! processes, on one machine or many, may share one database: the server does the
//! coordination.
//!
//! # The schema
//!
//! Every table, index, function and trigger is named `owner_access_…`, so both parts
//! can live in a host's own database. Each part (`directory`, `store`) has its
//! version in a row of `owner_access_schema`; the embedded migrations are applied on
//! connect, in one transaction under an advisory lock, so two processes connecting
//! at once migrate once. The store has no foreign key to, and no join with, the
//! owners' tables: it works beside a host's own [`OwnerRepository`].
//!
//! The schema enforces, as the SQLite adapter's does:
//!
//! - token hashes are unique (the primary key), and only the SHA-256 is stored;
//! - at most one live invitation per owner and one open invitation per owner and
//!   batch (partial unique indexes); triggers make a live token need a live
//!   invitation, keep token and invitation states moving forward only, and revoke an
//!   invitation's tokens when it is closed;
//! - one delivery per (batch, owner) (the primary key), with CHECKs tying each state
//!   to its fields (a claim to its holder and the end of its lease).
//!
//! And the statements:
//!
//! - a claim is one statement (`… FOR UPDATE SKIP LOCKED … RETURNING`): concurrent
//!   claimers take disjoint deliveries without waiting for each other; renewing,
//!   recording and releasing are conditional on the holder (fencing), each one
//!   statement for the whole group (arrays and `unnest`), and a grouped write returns
//!   the deliveries it refused. Nothing on the send path runs a statement per owner:
//!   a chunk of tokens is two statements, a group of outcomes four or fewer;
//! - leases are judged by the server's clock (`now()`) unless
//!   [`LeaseClock::Caller`] is chosen: every process sees the same expiry;
//! - the token's step of a redeem is one conditional `UPDATE` (live, not expired),
//!   after the token's invitation is locked, so of two concurrent redeems of one
//!   owner's links exactly one wins and the other is answered, not deadlocked.
//!
//! # Errors
//!
//! A server that cannot be reached, refuses connections, restarts or shuts down, a
//! connection killed under a call, a statement cancelled by its time-out, a
//! deadlock or serialisation failure: [`RepositoryError::Unavailable`], with the
//! driver's error as its source. Nothing of the failed call is kept (each call is one
//! transaction), so a send stops with its deliveries pending and a later run resumes
//! them. Any other server error is [`RepositoryError::Backend`]; a row this crate
//! would not have written is [`RepositoryError::Corrupt`]. Not found, already
//! exists, precondition and not-holder answers are those of the SQLite adapter.

use std::fmt;

use crate::repository::RepoResult;
#[cfg(doc)]
use crate::repository::{InvitationStore, OwnerDirectory, OwnerRepository, RepositoryError};

mod claims;
mod connection;
mod directory;
mod rate;
mod repository;
mod rows;
mod schema;
mod settings;
mod store;
mod tokens;

pub use settings::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT, LeaseClock,
    PostgresSettings,
};

use connection::Db;
use schema::{DIRECTORY, Part, STORE};

/// The workflow's state in PostgreSQL: an [`InvitationStore`] on the `store` tables
/// (feature `postgres`). For a host that keeps its owners itself, beside its own
/// [`OwnerRepository`].
///
/// Cloning is cheap: clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    db: Db,
}

/// The crate's own communities and owners in PostgreSQL: an [`OwnerRepository`] and
/// [`OwnerDirectory`] on the `directory` tables (feature `postgres`).
///
/// Cloning is cheap: clones share the pool.
#[derive(Clone)]
pub struct PostgresDirectory {
    db: Db,
    /// Whether an owner upsert that changes an address revokes the owner's links in
    /// the same transaction: when the store's tables are in the same database
    /// ([`PostgresRepository`]).
    revoke_links: bool,
}

/// Both ports in one PostgreSQL database, one pool (feature `postgres`): what
/// [`OwnerAccess::builder`](crate::OwnerAccess::builder) takes, as it takes a
/// [`SqliteRepository`](crate::SqliteRepository).
///
/// Cloning is cheap: clones share the pool.
#[derive(Clone)]
pub struct PostgresRepository {
    store: PostgresStore,
    directory: PostgresDirectory,
}

/// Opens a pool and brings `parts` to this build's versions.
async fn open(settings: &PostgresSettings, role: &str, parts: &[&Part]) -> RepoResult<Db> {
    let db = Db::new(settings, role)?;
    db.run(async {
        let mut client = db.client().await?;
        schema::migrate(&mut client, &db.name, parts).await
    })
    .await?;
    Ok(db)
}

impl PostgresStore {
    /// Connects and applies the store's migrations.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the server cannot be reached;
    /// [`RepositoryError::Corrupt`] when its tables are of a newer version;
    /// [`RepositoryError::NameTaken`] when another object has the name of one of
    /// them;
    /// [`RepositoryError::Backend`] for a URL that does not parse or another failure.
    pub async fn connect(settings: &PostgresSettings) -> RepoResult<PostgresStore> {
        Ok(PostgresStore {
            db: open(settings, "store", &[&STORE]).await?,
        })
    }
}

impl PostgresDirectory {
    /// Connects and applies the directory's migrations. Its owner upserts touch the
    /// owners only (links are bound to the address they were sent to in any case).
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn connect(settings: &PostgresSettings) -> RepoResult<PostgresDirectory> {
        Ok(PostgresDirectory {
            db: open(settings, "directory", &[&DIRECTORY]).await?,
            revoke_links: false,
        })
    }
}

impl PostgresRepository {
    /// Connects and applies the migrations of both parts.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn connect(settings: &PostgresSettings) -> RepoResult<PostgresRepository> {
        let db = open(settings, "repository", &[&DIRECTORY, &STORE]).await?;
        Ok(PostgresRepository {
            store: PostgresStore { db: db.clone() },
            directory: PostgresDirectory {
                db,
                revoke_links: true,
            },
        })
    }

    /// The store half, sharing the pool.
    pub fn store(&self) -> &PostgresStore {
        &self.store
    }

    /// The directory half, sharing the pool.
    pub fn directory(&self) -> &PostgresDirectory {
        &self.directory
    }
}

macro_rules! display_and_debug {
    ($($ty:ty => $db:ident $(. $field:ident)*),* $(,)?) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.$db$(.$field)*.name)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).field("name", &self.$db$(.$field)*.name).finish_non_exhaustive()
            }
        }
    )*};
}

display_and_debug! {
    PostgresStore => db,
    PostgresDirectory => db,
    PostgresRepository => store.db,
}
