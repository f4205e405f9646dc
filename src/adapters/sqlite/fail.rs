//! Failures inside a call ([`Fail`]: SQLite's, or one of the repository's own kinds)
//! and how a SQLite error becomes the [`RepositoryError`] the workflow reacts to,
//! keeping SQLite's error, named for what it means, as the cause.

use std::fmt;

use rusqlite::ErrorCode;

use crate::repository::RepositoryError;

/// A failure inside a call: SQLite's, or one of the repository's own kinds.
pub(super) enum Fail {
    Sql(rusqlite::Error),
    Repo(RepositoryError),
}

pub(super) type Res<T> = Result<T, Fail>;

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
pub(super) struct Message(pub(super) String);

pub(super) fn bad_row(what: &str, detail: impl fmt::Display) -> Fail {
    Fail::Repo(RepositoryError::Corrupt {
        message: format!("bad {what} in the database: {detail}"),
    })
}

pub(super) fn not_found(what: &'static str, id: impl fmt::Display) -> Fail {
    Fail::Repo(RepositoryError::NotFound {
        what,
        id: id.to_string(),
    })
}

pub(super) fn precondition(message: String) -> Fail {
    Fail::Repo(RepositoryError::Precondition { message })
}

/// A SQLite failure named by what it means for the file ("disk full", "read-only
/// file", "database is locked"), with SQLite's own error as its source: the cause
/// that [`RepositoryError::Unavailable`] and [`RepositoryError::Backend`] carry.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub(super) struct SqliteCause {
    what: &'static str,
    #[source]
    source: rusqlite::Error,
}

/// What a SQLite result code means, in words, for the codes a host meets in
/// operation. Others (a missing table, a constraint) carry SQLite's own message.
pub(super) fn meaning(code: ErrorCode) -> Option<&'static str> {
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
pub(super) fn cause(e: rusqlite::Error) -> Box<dyn std::error::Error + Send + Sync> {
    match e.sqlite_error_code().and_then(meaning) {
        Some(what) => Box::new(SqliteCause { what, source: e }),
        None => Box::new(e),
    }
}

/// Maps a SQLite error to the kind the workflow reacts to, keeping it as the cause.
pub(super) fn classify(store: &str, e: rusqlite::Error) -> RepositoryError {
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

pub(super) fn join_error(store: &str, e: tokio::task::JoinError) -> RepositoryError {
    RepositoryError::Backend {
        store: store.to_owned(),
        source: Box::new(e),
    }
}
