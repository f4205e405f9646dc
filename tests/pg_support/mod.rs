//! A database of its own for each test, on the PostgreSQL server at
//! `OWNER_ACCESS_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! dropped when the test ends (also when it fails); inside it, a schema of its own
//! for each fresh repository a suite asks for.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use owner_access::adapters::postgres::{LeaseClock, PostgresSettings};

/// The server the tests use.
pub fn server_url() -> String {
    std::env::var("OWNER_ACCESS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database replaced by `db` and `extra` query parameters added.
fn with_database(url: &str, db: &str, extra: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    let params: Vec<&str> = [query, extra]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    if !params.is_empty() {
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL server at {url} ({e}): start one, or set OWNER_ACCESS_PG_URL")
        });
    tokio::spawn(connection);
    client
}

/// A database created for one test, dropped (with its connections) when dropped.
pub struct TestDb {
    pub name: String,
    server: String,
    schemas: AtomicUsize,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let server = server_url();
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("random bytes");
        let name = format!(
            "owner_access_test_{}",
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        admin(&server)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        TestDb {
            name,
            server,
            schemas: AtomicUsize::new(0),
        }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        with_database(&self.server, &self.name, "")
    }

    /// Settings for the database, with a search path of a fresh schema: an empty
    /// repository each time. Leases judged by the caller's clock, as the conformance
    /// suites (fixed times) need.
    pub async fn fresh(&self) -> PostgresSettings {
        self.fresh_named().await.0
    }

    /// [`fresh`](Self::fresh), and the schema's name, for a test's own SQL on the
    /// adapters' tables (`{schema}.owner_access_…`).
    pub async fn fresh_named(&self) -> (PostgresSettings, String) {
        let n = self.schemas.fetch_add(1, Ordering::SeqCst);
        let schema = format!("s{n}");
        admin(&self.url())
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("CREATE SCHEMA");
        let settings = PostgresSettings::new(with_database(
            &self.server,
            &self.name,
            &format!("options=-c%20search_path%3D{schema}"),
        ))
        .pool_size(4)
        .lease_clock(LeaseClock::Caller);
        (settings, schema)
    }

    /// A client of the database (not of the adapters' pools).
    pub async fn client(&self) -> tokio_postgres::Client {
        admin(&self.url()).await
    }

    /// Ends every connection to the database but the caller's: what a server restart
    /// does to the adapters' pools. Returns how many it ended.
    pub async fn kill_connections(&self) -> i64 {
        let client = admin(&self.server).await;
        let row = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("pg_terminate_backend");
        row.get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // A runtime of its own: the test's may be gone or busy.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async move {
                    admin(&server)
                        .await
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
