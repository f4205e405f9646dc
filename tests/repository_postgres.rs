//! The PostgreSQL adapters against a real server: the conformance suites (directly
//! and through `Arc<dyn …>`), leases judged by the server's clock, concurrent
//! redeems and claims through separate pools, and a server that ends the pool's
//! connections mid-send.
//!
//! Needs a server: `OWNER_ACCESS_PG_URL=postgres://user@host:port/db cargo test
//! --all-features --test repository_postgres -- --include-ignored` (the default URL
//! is `postgres://postgres@127.0.0.1:5432/postgres`). Each test creates a database
//! of its own and drops it.

mod pg_support;

use std::sync::Arc;

use owner_access::OwnerStorage;
use owner_access::adapters::postgres::{PostgresDirectory, PostgresRepository};
use owner_access::repository::OwnerRepository;
use owner_access::testing::{directory_conformance, repository_conformance, seed_through_upserts};
use pg_support::TestDb;

const NEEDS: &str = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored";

fn report(failures: Vec<owner_access::testing::Failure>) -> String {
    failures
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn repository_conformance_directly() {
    let db = TestDb::create().await;
    let result = repository_conformance(|| async {
        PostgresRepository::connect(&db.fresh().await)
            .await
            .expect("connect")
    })
    .await;
    if let Err(failures) = result {
        panic!("{} failures:\n{}", failures.len(), report(failures));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn repository_conformance_through_arc_dyn() {
    let db = TestDb::create().await;
    let result = repository_conformance(|| async {
        let repo: Arc<dyn OwnerStorage> = Arc::new(
            PostgresRepository::connect(&db.fresh().await)
                .await
                .expect("connect"),
        );
        repo
    })
    .await;
    if let Err(failures) = result {
        panic!("{} failures:\n{}", failures.len(), report(failures));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set OWNER_ACCESS_PG_URL and run with --include-ignored"]
async fn directory_conformance_directly_and_through_arc_dyn() {
    let db = TestDb::create().await;
    let direct = directory_conformance(|seed| {
        let db = &db;
        async move {
            let dir = PostgresDirectory::connect(&db.fresh().await)
                .await
                .expect("connect");
            seed_through_upserts(&dir, &seed).await.expect("seed");
            dir
        }
    })
    .await;
    if let Err(failures) = direct {
        panic!("{} failures:\n{}", failures.len(), report(failures));
    }
    let shared = directory_conformance(|seed| {
        let db = &db;
        async move {
            let dir = PostgresDirectory::connect(&db.fresh().await)
                .await
                .expect("connect");
            seed_through_upserts(&dir, &seed).await.expect("seed");
            let dir: Arc<dyn OwnerRepository> = Arc::new(dir);
            dir
        }
    })
    .await;
    if let Err(failures) = shared {
        panic!("{} failures:\n{}", failures.len(), report(failures));
    }
    let _ = NEEDS;
}
