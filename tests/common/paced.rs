//! Several senders resuming one batch at once with a rate, each over its own handle on
//! one store (as processes are), and the accept times of every message: what the
//! whole-batch rate is checked on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use owner_access::domain::{BatchId, Community, CommunityId, Owner};
use owner_access::prelude::*;
use owner_access::transport::{Accepted, Envelope, TransportError};
use owner_access::{InMemoryTransport, OwnerAccess, Selection, SendOptions, async_trait};

use super::{PORTAL, addr, oid, owner};

/// A transport that accepts every message after `latency`, noting when.
pub struct Timed {
    inner: InMemoryTransport,
    latency: Duration,
    accepted: Mutex<Vec<Instant>>,
    fail: std::sync::atomic::AtomicBool,
}

impl Timed {
    pub fn new(latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: InMemoryTransport::new(),
            latency,
            accepted: Mutex::new(Vec::new()),
            fail: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn accepted(&self) -> Vec<Instant> {
        self.accepted.lock().unwrap().clone()
    }

    /// Every owner's copies.
    pub fn copies(&self) -> BTreeMap<String, usize> {
        let mut copies = BTreeMap::new();
        for m in self.inner.messages() {
            *copies.entry(m.envelope.to.to_string()).or_insert(0) += 1;
        }
        copies
    }
}

impl std::fmt::Display for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed transport")
    }
}

#[async_trait]
impl MailTransport for Timed {
    async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Accepted, TransportError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(TransportError::fatal("refused until the batch is made"));
        }
        tokio::time::sleep(self.latency).await;
        let accepted = self.inner.send(envelope, message).await?;
        self.accepted.lock().unwrap().push(Instant::now());
        Ok(accepted)
    }
}

fn community() -> CommunityId {
    CommunityId::new("c1").unwrap()
}

fn service(
    storage: Arc<dyn OwnerStorage>,
    transport: Arc<Timed>,
    options: SendOptions,
) -> OwnerAccess {
    OwnerAccess::builder(storage, transport)
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .send_options(options)
        .build()
        .unwrap()
}

/// `owners` owners in `first`, a batch of all of them left pending (a send stopped
/// on a fatal error before any message).
pub async fn pending_batch(first: Arc<dyn OwnerStorage>, owners: usize) -> BatchId {
    first
        .upsert_community(
            &Community::new(community(), "Maple Grove HOA")
                .with_reply_to(addr("board@maplegrove.example.org")),
        )
        .await
        .unwrap();
    let all: Vec<Owner> = (0..owners)
        .map(|i| owner(&format!("p{i:04}"), Some(&format!("p{i:04}@example.org"))))
        .collect();
    first
        .upsert_owners(&all, owner_access::domain::Timestamp::from_unix_seconds(0))
        .await
        .unwrap();
    let refusing = Timed::new(Duration::ZERO);
    refusing
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let service = service(first, refusing, SendOptions::default());
    let selection: Selection = (0..owners).map(|i| oid(&format!("p{i:04}"))).collect();
    let invite = service.compose(&community(), &selection).await.unwrap();
    let report = service
        .send(service.review(&invite).await.unwrap())
        .await
        .unwrap();
    assert_eq!(report.pending, owners);
    report.batch.unwrap()
}

/// Resumes `batch` with one sender per handle at once, each at `rate` with
/// `concurrency` messages in flight, into one transport; every report complete (the
/// batch settled).
pub async fn resume_together(
    handles: Vec<Arc<dyn OwnerStorage>>,
    batch: &BatchId,
    rate: f64,
    concurrency: usize,
    transport: Arc<Timed>,
) {
    let runs = handles.into_iter().map(|storage| {
        let options = SendOptions {
            concurrency,
            rate_per_second: Some(rate),
            ..SendOptions::default()
        };
        let service = service(storage, transport.clone(), options);
        let batch = batch.clone();
        tokio::spawn(async move { service.resume(&batch).await })
    });
    for report in futures::future::join_all(runs).await {
        let report = report.unwrap().unwrap();
        assert!(report.is_complete(), "{report:?}");
    }
}

/// Messages accepted in each whole second from the first acceptance, the first and
/// last second left out (the first starts with a group already granted, the last is
/// cut short).
pub fn per_second(accepted: &[Instant]) -> Vec<usize> {
    let Some(start) = accepted.iter().min().copied() else {
        return Vec::new();
    };
    let mut buckets: BTreeMap<u64, usize> = BTreeMap::new();
    for at in accepted {
        *buckets
            .entry(at.duration_since(start).as_secs())
            .or_insert(0) += 1;
    }
    let last = buckets.keys().next_back().copied().unwrap_or(0);
    buckets
        .into_iter()
        .filter(|(second, _)| *second != 0 && *second != last)
        .map(|(_, n)| n)
        .collect()
}

/// Four senders, each over a handle of its own from `open`, resume one batch of 1,200
/// owners at 200 a second together: everyone once, no whole second above the rate,
/// and the rate used (a mean of at least three quarters of it). `store` names the
/// store in the printed buckets.
pub async fn four_senders_keep_the_batch_rate<F, Fut>(open: F, store: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn OwnerStorage>>,
{
    const OWNERS: usize = 1200;
    const RATE: f64 = 200.0;
    let batch = pending_batch(open().await, OWNERS).await;
    // Six seconds of sending, so all four senders hold claims and send at once.
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(open().await);
    }
    let transport = Timed::new(Duration::from_millis(5));
    resume_together(handles, &batch, RATE, 4, transport.clone()).await;
    let copies = transport.copies();
    assert_eq!(copies.len(), OWNERS);
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
    let buckets = per_second(&transport.accepted());
    println!("accepted per second, 4 senders on {store} at rate {RATE}: {buckets:?}");
    assert!(buckets.len() >= 3, "{buckets:?}");
    assert!(
        buckets.iter().all(|n| *n as f64 <= RATE),
        "no second above the batch's rate: {buckets:?}"
    );
    let mean = buckets.iter().sum::<usize>() as f64 / buckets.len() as f64;
    // Slots are 5% wider than 1/RATE, and the tail of the batch (one sender left with
    // the last chunk, on a loaded machine) may dip: the mean is checked loosely.
    assert!(
        mean >= 0.75 * RATE,
        "the rate is used: mean {mean} in {buckets:?}"
    );
}
