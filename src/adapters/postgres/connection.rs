//! The pool of connections and what a failure of the server means to the caller:
//! every driver error becomes one [`RepositoryError`], with the driver's error kept
//! as its source.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio_postgres::error::SqlState;

use crate::repository::{RepoResult, RepositoryError};

use super::settings::{LeaseClock, PostgresSettings, tls};

/// A plain message as an error source.
#[derive(Debug)]
pub(crate) struct Message(pub(crate) String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

/// A failure inside an adapter call, before it is named for the caller.
#[derive(Debug)]
pub(super) enum Fail {
    /// The driver's.
    Pg(tokio_postgres::Error),
    /// Taking a connection from the pool.
    Pool(PoolError),
    /// Already a repository error (not found, a precondition, a bad row).
    Repo(RepositoryError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<RepositoryError> for Fail {
    fn from(e: RepositoryError) -> Self {
        Fail::Repo(e)
    }
}

/// What a call returns inside the adapter.
pub(super) type Res<T> = Result<T, Fail>;

/// A row the adapter cannot read: [`RepositoryError::Corrupt`].
pub(super) fn bad_row(what: &str, detail: impl fmt::Display) -> Fail {
    Fail::Repo(RepositoryError::Corrupt {
        message: format!("{what}: {detail}"),
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

/// Whether a server error means "try again later": the connection is gone or
/// refused, the server is shutting down, starting or out of resources, the
/// statement was cancelled (its time-out), or the transaction lost a serialisation
/// race or a deadlock.
fn is_transient(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    matches!(class, "08" | "53" | "57" | "40" | "58") || *code == SqlState::LOCK_NOT_AVAILABLE
}

/// Names a failure for the caller (see the module docs of `postgres`).
pub(super) fn classify(store: &str, e: Fail) -> RepositoryError {
    match e {
        Fail::Repo(e) => e,
        // Opening a connection to a database that does not accept connections now
        // (being dropped, or `ALLOW_CONNECTIONS false` while an operator works on it).
        Fail::Pool(PoolError::Backend(e))
            if e.code() == Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) =>
        {
            RepositoryError::Unavailable {
                store: store.to_owned(),
                source: Box::new(e),
            }
        }
        Fail::Pool(PoolError::Backend(e)) => classify(store, Fail::Pg(e)),
        Fail::Pool(e) => RepositoryError::Unavailable {
            store: store.to_owned(),
            source: Box::new(e),
        },
        Fail::Pg(e) => match e.code() {
            Some(code) if is_transient(code) => RepositoryError::Unavailable {
                store: store.to_owned(),
                source: Box::new(e),
            },
            Some(_) => RepositoryError::Backend {
                store: store.to_owned(),
                source: Box::new(e),
            },
            None if is_connection_failure(&e) => RepositoryError::Unavailable {
                store: store.to_owned(),
                source: Box::new(e),
            },
            None if is_row_failure(&e) => RepositoryError::Corrupt {
                message: format!("{store}: a stored value cannot be read: {e}"),
            },
            None => RepositoryError::Backend {
                store: store.to_owned(),
                source: Box::new(e),
            },
        },
    }
}

/// A driver error without a SQLSTATE that comes from the connection: it is closed
/// (the server ended it, or went away mid-statement), an I/O error is beneath it, or
/// connecting, the TLS handshake or the connect time-out failed.
fn is_connection_failure(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    let text = e.to_string();
    [
        "error connecting",
        "error performing TLS",
        "timeout waiting",
        "error communicating",
    ]
    .iter()
    .any(|start| text.starts_with(start))
}

/// A driver error reading a row: a column of another type or missing (what this
/// crate's schema never holds).
fn is_row_failure(e: &tokio_postgres::Error) -> bool {
    let text = e.to_string();
    text.starts_with("error deserializing column") || text.starts_with("invalid column")
}

/// The pool and what every statement needs to know: the clock that judges leases.
#[derive(Clone)]
pub(super) struct Db {
    pool: Pool,
    /// What errors and `Display` call the store: "PostgreSQL store at host:port/db".
    pub(super) name: String,
    pub(super) lease_clock: LeaseClock,
}

impl Db {
    /// A pool for `settings`; no connection is opened yet.
    pub(super) fn new(settings: &PostgresSettings, role: &str) -> RepoResult<Db> {
        let config = settings.pg_config()?;
        let name = format!(
            "PostgreSQL {role} at {}",
            PostgresSettings::describe(&config)
        );
        let connector = tls(config.get_ssl_mode())?;
        let manager = Manager::from_config(
            config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(settings.get_connect_timeout());
        let pool = Pool::builder(manager)
            .max_size(settings.get_pool_size())
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| RepositoryError::Backend {
                store: name.clone(),
                source: Box::new(e),
            })?;
        Ok(Db {
            pool,
            name,
            lease_clock: settings.get_lease_clock(),
        })
    }

    /// A connection from the pool.
    pub(super) async fn client(&self) -> Res<Object> {
        self.pool.get().await.map_err(Fail::Pool)
    }

    /// Runs an adapter call and names its failure.
    pub(super) async fn run<T>(&self, call: impl Future<Output = Res<T>>) -> RepoResult<T> {
        call.await.map_err(|e| classify(&self.name, e))
    }

    /// The `now` a lease statement gets: the caller's (nanoseconds), or NULL for the
    /// server's (the statements read `coalesce($n, owner_access_now_ns())`).
    pub(super) fn lease_now(&self, caller: i64) -> Option<i64> {
        match self.lease_clock {
            LeaseClock::Caller => Some(caller),
            LeaseClock::Server => None,
        }
    }
}

/// The statements' parameters.
pub(super) type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// Every row of a statement (prepared once per connection, then cached).
pub(super) async fn rows<C: deadpool_postgres::GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Res<Vec<tokio_postgres::Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// The row of a statement that returns at most one.
pub(super) async fn row<C: deadpool_postgres::GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Res<Option<tokio_postgres::Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

/// Runs a statement; the number of rows it changed.
pub(super) async fn exec<C: deadpool_postgres::GenericClient + Sync>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Res<u64> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}
