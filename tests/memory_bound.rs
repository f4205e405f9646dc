//! Memory does not grow with a community beyond what each owner needs.
//!
//! - The send path streams: memory during a send does not grow with the batch beyond
//!   the per-owner records the repository keeps. Peak live bytes while sending 4,000
//!   messages that each carry a 200 KB attachment (800 MB if messages were buffered)
//!   must stay within a small per-owner allowance.
//! - A review holds each recipient as an id and an address, and reads the selection a
//!   chunk at a time: its peak grows by a few hundred bytes per selected owner, not by
//!   an owner record (or two) per owner.
//!
//! Measured with a counting allocator; the tests take turns, as it counts every
//! thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use owner_access::domain::{Community, CommunityId, Owner, OwnerId, PropertyId, Timestamp};
use owner_access::invite::Attachment;
use owner_access::prelude::*;
use owner_access::transport::{Accepted, Envelope, MailTransport, TransportError};
use owner_access::{InMemoryRepository, OwnerAccess, Selection, async_trait};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are
// added around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time: the counters are the whole process's.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct DropTransport;

impl std::fmt::Display for DropTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("drop transport")
    }
}

#[async_trait]
impl MailTransport for DropTransport {
    async fn send(&self, _: &Envelope, message: &[u8]) -> Result<Accepted, TransportError> {
        assert!(message.len() > 200 * 1024);
        Ok(Accepted::default())
    }
}

/// A repository with one community of `n` owners, each with a name, a property
/// address and an address of their own.
async fn community_of(n: usize) -> (Arc<InMemoryRepository>, CommunityId) {
    let repo = Arc::new(InMemoryRepository::new());
    let community = CommunityId::new("c").unwrap();
    repo.upsert_community(&Community::new(community.clone(), "Big HOA"))
        .await
        .unwrap();
    let owners: Vec<Owner> = (0..n)
        .map(|i| {
            Owner::new(
                OwnerId::new(format!("o{i}")).unwrap(),
                community.clone(),
                PropertyId::new(format!("p{i}")).unwrap(),
                "Annabelle",
                "Lee-Okafor",
            )
            .with_property_address(format!("{} Long Street, Unit {i}", 100 + i / 40))
            .with_primary_email(format!("annabelle.lee-okafor.{i}@example.org"))
        })
        .collect();
    repo.upsert_owners(&owners, Timestamp::from_unix_seconds(1_795_701_600))
        .await
        .unwrap();
    (repo, community)
}

/// Peak bytes allocated above the level before the send, for a batch of `n`.
async fn peak_during_send(n: usize) -> usize {
    let (repo, community) = community_of(n).await;
    let service = OwnerAccess::builder(repo, Arc::new(DropTransport))
        .sender("no-reply@example.com")
        .portal_url("https://portal.example.com/register")
        .build()
        .unwrap();
    let all: Selection = (0..n)
        .map(|i| OwnerId::new(format!("o{i}")).unwrap())
        .collect();
    let invite = service
        .compose(&community, &all)
        .await
        .unwrap()
        .with_attachment(Attachment::new(
            "welcome.pdf",
            "application/pdf",
            vec![42u8; 200 * 1024],
        ));
    let review = service.review(&invite).await.unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let report = service.send(review).await.unwrap();
    assert_eq!(report.sent, n);
    PEAK.load(Ordering::Relaxed) - before
}

#[test]
fn send_memory_does_not_grow_with_the_batch() {
    let _turn = turn();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let small = rt.block_on(peak_during_send(500));
    let large = rt.block_on(peak_during_send(4_000));
    let per_owner = (large.saturating_sub(small)) / 3_500;
    eprintln!(
        "peak above baseline: {small} B for 500 owners, {large} B for 4,000; {per_owner} B per extra owner"
    );
    // Buffering rendered messages would cost over 200 KB per owner; the batch's stored
    // copy of the invite (with its attachment) and the repository's per-owner records
    // (delivery, token, status) are all that may grow.
    assert!(
        per_owner < 4 * 1024,
        "{per_owner} B per owner: the send path is buffering"
    );
    assert!(large < 64 * 1024 * 1024, "peak {large} B above baseline");
}

/// Peak bytes allocated above the level before the review of every one of `n`
/// owners, and what the review holds when it is done.
async fn peak_during_review(n: usize) -> (usize, usize) {
    let (repo, community) = community_of(n).await;
    let service = OwnerAccess::builder(repo, Arc::new(DropTransport))
        .sender("no-reply@example.com")
        .portal_url("https://portal.example.com/register")
        .build()
        .unwrap();
    let all: Selection = (0..n)
        .map(|i| OwnerId::new(format!("o{i}")).unwrap())
        .collect();
    let invite = service.compose(&community, &all).await.unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let review = service.review(&invite).await.unwrap();
    let held = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(review.recipients.len(), n);
    (PEAK.load(Ordering::Relaxed) - before, held)
}

#[test]
fn a_review_holds_ids_and_addresses_not_owner_records() {
    let _turn = turn();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (small, _) = rt.block_on(peak_during_review(2_000));
    let (large, held) = rt.block_on(peak_during_review(30_000));
    let per_owner = large.saturating_sub(small) / 28_000;
    let held_per_owner = held / 30_000;
    eprintln!(
        "review peak above baseline: {small} B for 2,000 owners, {large} B for 30,000; \
         {per_owner} B per extra owner; the review holds {held_per_owner} B per owner"
    );
    // An id and an address (its three spellings) take about 250 B; an owner record
    // alone (names, ids, property address, email, status) more than 350 B, so a
    // review holding records, or reading every record at once, is well over this.
    assert!(
        per_owner < 400,
        "{per_owner} B per owner at the review's peak: it holds more than ids and addresses"
    );
    assert!(
        held_per_owner < 320,
        "the review holds {held_per_owner} B per owner"
    );
}
