//! The one error type of both storage ports, and what each kind means to the caller.

use crate::domain::{BatchId, OwnerId, SenderId};

/// What went wrong in a repository. Adapters map their private errors into these
/// kinds so the workflow can react (retry, report a conflict, give up).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// A record the call needs does not exist.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// An insert met an existing record with the same key.
    #[error("{what} `{id}` already exists")]
    AlreadyExists {
        /// What kind of record.
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// A compare-and-set found the record in another state than required (an address
    /// taken meanwhile). Nothing was changed.
    #[error("precondition failed: {message}")]
    Precondition {
        /// What did not hold.
        message: String,
    },
    /// A write about a claimed delivery came from a sender that does not hold its
    /// claim: another sender took it over after its lease ran out (the writer was
    /// paused or cut off from the store for longer than the lease), or it was
    /// released, revoked or settled. Nothing was changed; the delivery is not the
    /// writer's to record.
    #[error("sender `{sender}` does not hold the claim on delivery `{batch}/{owner}`")]
    NotHolder {
        /// The batch.
        batch: BatchId,
        /// The delivery's owner.
        owner: OwnerId,
        /// The sender whose write was refused.
        sender: SenderId,
    },
    /// The stored data cannot be read (a corrupt or foreign file, a bad row).
    #[error("stored data is corrupt: {message}")]
    Corrupt {
        /// What is wrong.
        message: String,
    },
    /// The store cannot be reached, is busy, full or read-only; the same call may
    /// succeed once that is fixed. Nothing of the call was stored.
    #[error("{store} is unavailable")]
    Unavailable {
        /// The adapter.
        store: String,
        /// The cause, as the backend reported it: walk [`source`](std::error::Error::source)
        /// to show it (SqliteRepository names it, "disk full", "read-only file",
        /// "database is locked", with the `rusqlite::Error` beneath).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A name the adapter needs for its own tables (for SQLite, a table, index or
    /// trigger named `owner_access_…`) is taken by another object in the database: a
    /// host's table, view or index of that name, or a table of another shape. Nothing
    /// was changed. Rename or drop the host's object, or keep the crate's state in
    /// another database; the same call fails until then.
    #[error(
        "{store}: the name `{name}` that owner-access needs for its tables is taken by another object; nothing was changed"
    )]
    NameTaken {
        /// The adapter.
        store: String,
        /// The name that is taken.
        name: String,
    },
    /// Any other failure of the adapter (for SQLite, for example, a missing table).
    #[error("{store} failed")]
    Backend {
        /// The adapter.
        store: String,
        /// The cause, as the backend reported it (keep its own source chain).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Shorthand for repository results.
pub type RepoResult<T> = Result<T, RepositoryError>;
