//! What the send engine does to owners' links, through the service: a link is revoked
//! only when a newer message to its owner has been recorded as sent. A batch that stops
//! part-way revokes the links of the owners it reached and no others; a process that
//! dies after its messages were accepted and before their outcomes were recorded
//! leaves the old links working and the new ones pending (`NotSent`), and the resume
//! that sends those messages again makes both copies' links work (DESIGN.md rule 4).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::wrapped::{Hooks, Wrapped};
use common::*;
use owner_access::adapters::memory::Fault;
use owner_access::domain::{
    BatchId, Community, DeliveryOutcome, OwnerId, SenderId, Timestamp, TokenRejection,
};
use owner_access::prelude::*;
use owner_access::repository::RepoResult;
use owner_access::{
    Error, InMemoryRepository, InMemoryTransport, OwnerAccess, RunControl, Selection, SendOptions,
    async_trait,
};

/// Records outcomes, or hangs for ever when `hang` is set: a process that dies after
/// its messages were accepted, before their outcomes were stored.
#[derive(Debug, Default)]
struct HangingRecords {
    hang: AtomicBool,
}

#[async_trait]
impl Hooks for Arc<HangingRecords> {
    async fn record_deliveries(
        &self,
        inner: &InMemoryRepository,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        if self.hang.load(Ordering::SeqCst) {
            futures::future::pending::<()>().await;
        }
        inner.record_deliveries(batch, sender, outcomes, now).await
    }
}

struct Setup {
    hooks: Arc<HangingRecords>,
    repo: Arc<Wrapped<Arc<HangingRecords>>>,
    transport: Arc<InMemoryTransport>,
    service: OwnerAccess,
}

async fn setup(owners: usize) -> Setup {
    let hooks = Arc::new(HangingRecords::default());
    let repo = Arc::new(Wrapped::new(hooks.clone()));
    repo.upsert_community(&Community::new(
        owner_access::domain::CommunityId::new("c1").unwrap(),
        "Maple Grove HOA",
    ))
    .await
    .unwrap();
    let list: Vec<_> = (0..owners)
        .map(|i| owner(&format!("e{i}"), Some(&format!("e{i}@example.org"))))
        .collect();
    repo.upsert_owners(&list, t0()).await.unwrap();
    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder(repo.clone(), transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .send_options(SendOptions {
            concurrency: 1,
            ..fast_options()
        })
        .build()
        .unwrap();
    Setup {
        hooks,
        repo,
        transport,
        service,
    }
}

impl Setup {
    async fn send_to_all(&self, owners: usize) -> owner_access::SendReport {
        let selection: Selection = (0..owners).map(|i| oid(&format!("e{i}"))).collect();
        let community = owner_access::domain::CommunityId::new("c1").unwrap();
        let invite = self.service.compose(&community, &selection).await.unwrap();
        let review = self.service.review(&invite).await.unwrap();
        self.service
            .send_with(review, RunControl::new())
            .await
            .unwrap()
    }

    /// Each owner's link in the messages from the `skip`-th on.
    fn links_from(&self, skip: usize) -> Vec<(String, String)> {
        let mut links: Vec<(String, String)> = self
            .transport
            .messages()
            .into_iter()
            .skip(skip)
            .map(|m| (m.envelope.to.to_string(), token_in(&m.bytes)))
            .collect();
        links.sort();
        links
    }

    async fn works(&self, token: &str) -> Result<(), TokenRejection> {
        match self.service.verify(token).await {
            Ok(_) => Ok(()),
            Err(Error::InvalidToken { reason }) => Err(reason),
            Err(e) => panic!("verify: {e}"),
        }
    }
}

#[tokio::test]
async fn a_batch_that_stops_part_way_revokes_only_the_links_of_the_owners_it_reached() {
    let w = setup(3).await;
    assert_eq!(w.send_to_all(3).await.sent, 3);
    let first = w.links_from(0);
    // e0 is sent, then authentication is refused: the batch stops.
    w.transport
        .fail_address(&addr("e1@example.org"), Fault::Fatal);
    let report = w.send_to_all(3).await;
    assert_eq!(report.sent, 1, "{report:?}");
    assert!(report.stopped.is_some(), "{report:?}");
    let second = w.links_from(3);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0, "e0@example.org");
    assert_eq!(
        w.works(&first[0].1).await,
        Err(TokenRejection::Revoked),
        "e0's old link, superseded by the message that went out"
    );
    assert_eq!(w.works(&second[0].1).await, Ok(()), "e0's new link");
    assert_eq!(
        w.works(&first[1].1).await,
        Ok(()),
        "e1's link: nothing reached e1"
    );
    assert_eq!(
        w.works(&first[2].1).await,
        Ok(()),
        "e2's link: nothing reached e2"
    );
}

#[tokio::test]
async fn a_crash_after_acceptance_keeps_the_old_links_and_the_resume_keeps_both_copies() {
    let w = setup(2).await;
    assert_eq!(w.send_to_all(2).await.sent, 2);
    let first = w.links_from(0);

    // The process dies after its messages were accepted, before their outcomes were
    // stored: the run never returns, and is dropped.
    w.hooks.hang.store(true, Ordering::SeqCst);
    let crashed = tokio::time::timeout(Duration::from_secs(3), w.send_to_all(2)).await;
    assert!(crashed.is_err(), "the run hangs on recording");
    let copies = w.links_from(2);
    assert_eq!(copies.len(), 2, "both messages were accepted");
    for (to, link) in &first {
        assert_eq!(
            w.works(link).await,
            Ok(()),
            "{to}'s old link after the crash"
        );
    }
    for (to, link) in &copies {
        assert_eq!(
            w.works(link).await,
            Err(TokenRejection::NotSent),
            "{to}'s new link, its message not recorded as sent"
        );
    }

    // The resume sends both again (same Message-ID, fresh links) and records them.
    w.hooks.hang.store(false, Ordering::SeqCst);
    let batch = w
        .repo
        .inner
        .batches(&owner_access::domain::CommunityId::new("c1").unwrap())
        .await
        .unwrap()[0]
        .id
        .clone();
    let report = w
        .service
        .resume_after_crash(&batch, RunControl::new())
        .await
        .unwrap();
    assert_eq!(report.sent, 2, "{report:?}");
    let messages = w.transport.messages();
    for i in 0..2 {
        assert_eq!(
            messages[2 + i].message_id(),
            messages[4 + i].message_id(),
            "sent again with the same Message-ID"
        );
    }
    let again = w.links_from(4);
    for (to, link) in copies.iter().chain(&again) {
        assert_eq!(w.works(link).await, Ok(()), "{to}'s link in either copy");
    }
    for (to, link) in &first {
        assert_eq!(
            w.works(link).await,
            Err(TokenRejection::Revoked),
            "{to}'s old link, superseded once the newer message was recorded"
        );
    }
}
