//! The in-memory adapters pass both conformance suites, used directly and as trait
//! objects (`Box<dyn>`, `Arc<dyn>`).
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::time::Duration;

use owner_access::prelude::*;
use owner_access::testing::{
    DIRECTORY_CHECKS, Failure, REPOSITORY_CHECKS, TRANSPORT_CHECKS, repository_conformance,
    transport_conformance,
};
use owner_access::{InMemoryRepository, InMemoryTransport, MailTransport};

fn report(failures: Vec<Failure>) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_suite_passes_directly() {
    repository_conformance(|| async { InMemoryRepository::new() })
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_suite_passes_through_box_dyn() {
    repository_conformance(|| async {
        Box::new(InMemoryRepository::new()) as Box<dyn OwnerStorage>
    })
    .await
    .unwrap_or_else(|f| panic!("{}", report(f)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_suite_passes_through_arc_dyn() {
    repository_conformance(|| async {
        Arc::new(InMemoryRepository::new()) as Arc<dyn OwnerStorage>
    })
    .await
    .unwrap_or_else(|f| panic!("{}", report(f)));
}

#[tokio::test]
async fn repository_suite_passes_on_a_current_thread_runtime() {
    repository_conformance(|| async { InMemoryRepository::new() })
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
}

#[test]
fn check_lists_name_each_check_once() {
    let mut names: Vec<&str> = REPOSITORY_CHECKS
        .iter()
        .chain(DIRECTORY_CHECKS)
        .chain(TRANSPORT_CHECKS)
        .copied()
        .collect();
    let total = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_suite_passes_directly() {
    let transport = InMemoryTransport::new();
    transport_conformance(&transport, &transport)
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
    // 1 + 1 + 50 + 1 + 2 messages.
    assert_eq!(transport.len(), 55);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_suite_passes_through_box_dyn_with_a_closure_sink() {
    let recorder = Arc::new(InMemoryTransport::new().with_latency(Duration::from_millis(5)));
    let boxed: Box<dyn MailTransport> = Box::new(ArcTransport(recorder.clone()));
    let sink = {
        let recorder = recorder.clone();
        move || {
            recorder
                .messages()
                .into_iter()
                .map(|m| (m.envelope, m.bytes))
                .collect::<Vec<_>>()
        }
    };
    transport_conformance(&*boxed, &sink)
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
    assert!(
        recorder.max_in_flight() > 1,
        "the suite's concurrent check sends concurrently"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_suite_passes_through_arc_dyn() {
    let recorder = Arc::new(InMemoryTransport::new());
    let shared: Arc<dyn MailTransport> = recorder.clone();
    transport_conformance(&*shared, &*recorder)
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
    // Running it twice on one sink works: each run uses recipients of its own.
    transport_conformance(&*shared, &*recorder)
        .await
        .unwrap_or_else(|f| panic!("{}", report(f)));
}

/// Lets a shared recorder be boxed as a `dyn MailTransport` of its own.
struct ArcTransport(Arc<InMemoryTransport>);

impl std::fmt::Display for ArcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[owner_access::async_trait]
impl MailTransport for ArcTransport {
    async fn send(
        &self,
        envelope: &owner_access::transport::Envelope,
        message: &[u8],
    ) -> Result<owner_access::transport::Accepted, owner_access::transport::TransportError> {
        self.0.send(envelope, message).await
    }
}

/// The file outbox passes the transport suite, read back from the files it wrote.
#[tokio::test]
async fn file_outbox_passes_the_transport_suite() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = owner_access::FileOutbox::new(dir.path().join("outbox")).unwrap();
    let reader = outbox.clone();
    let sink = move || reader.messages().unwrap();
    owner_access::testing::transport_conformance(&outbox, &sink)
        .await
        .unwrap_or_else(|failures| panic!("{failures:#?}"));
}
