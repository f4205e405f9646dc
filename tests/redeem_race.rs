//! Two redeems of one link, the second arriving while the first is between its steps
//! (the token spent, the registration owed, its settlement not yet made): exactly one
//! answers with the registration, and the owner is registered once. Before the answer
//! was taken by a compare-and-set, the second call completed the first one's
//! registration and answered too, as if the first had crashed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::wrapped::{Hooks, Wrapped};
use common::*;
use owner_access::domain::{ActivityEntry, ActivityKind, Community, CommunityId, Page, TokenHash};
use owner_access::prelude::*;
use owner_access::repository::RepoResult;
use owner_access::{
    Error, InMemoryRepository, InMemoryTransport, OwnerAccess, RunControl, Selection, async_trait,
};
use tokio::sync::Notify;

/// Holds the first settlement until released: the first redeem, paused between its
/// steps.
#[derive(Debug, Default)]
struct PausedSettle {
    held: AtomicBool,
    reached: Notify,
    release: Notify,
}

#[async_trait]
impl Hooks for Arc<PausedSettle> {
    async fn settle_registration(
        &self,
        inner: &InMemoryRepository,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        if !self.held.swap(true, Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
        inner.settle_registration(token, activity).await
    }
}

fn community() -> CommunityId {
    CommunityId::new("c1").unwrap()
}

async fn invited() -> (Arc<PausedSettle>, OwnerAccess, String) {
    let hooks = Arc::new(PausedSettle::default());
    let repo = Arc::new(Wrapped::new(hooks.clone()));
    repo.upsert_community(&Community::new(community(), "Maple Grove HOA"))
        .await
        .unwrap();
    repo.upsert_owners(&[owner("e0", Some("e0@example.org"))], t0())
        .await
        .unwrap();
    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder(repo, transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url("https://portal.example.com/register")
        .send_options(fast_options())
        .build()
        .unwrap();
    let selection: Selection = [oid("e0")].into_iter().collect();
    let invite = service.compose(&community(), &selection).await.unwrap();
    let review = service.review(&invite).await.unwrap();
    let report = service.send_with(review, RunControl::new()).await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    let token = token_in(&transport.messages()[0].bytes);
    (hooks, service, token)
}

async fn registered_entries(service: &OwnerAccess) -> usize {
    service
        .activity(&community(), Page::first(50))
        .await
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, ActivityKind::Registered { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_redeem_while_the_first_is_between_its_steps_does_not_answer_too() {
    let (hooks, service, token) = invited().await;
    let first = tokio::spawn({
        let service = service.clone();
        let token = token.clone();
        async move { service.redeem(&token).await }
    });
    hooks.reached.notified().await;
    let second = service.redeem(&token).await;
    hooks.release.notify_one();
    let first = first.await.unwrap();
    let answered = [&first, &second].iter().filter(|r| r.is_ok()).count();
    assert_eq!(answered, 1, "first: {first:?}, second: {second:?}");
    for refused in [&first, &second].into_iter().filter(|r| r.is_err()) {
        assert!(
            matches!(
                refused,
                Err(Error::InvalidToken {
                    reason: owner_access::domain::TokenRejection::AlreadyUsed
                })
            ),
            "{refused:?}"
        );
    }
    assert_eq!(registered_entries(&service).await, 1);
    // A third try of the link, after both: used.
    assert!(service.redeem(&token).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeem_alone_answers_once_and_a_later_one_is_refused() {
    let (hooks, service, token) = invited().await;
    // No pause for this run: the hook's one hold is spent on nothing.
    hooks.held.store(true, Ordering::SeqCst);
    let registration = service.redeem(&token).await.unwrap();
    assert_eq!(registration.owner.id, oid("e0"));
    assert!(registration.owner.is_registered());
    assert!(matches!(
        service.redeem(&token).await,
        Err(Error::InvalidToken {
            reason: owner_access::domain::TokenRejection::AlreadyUsed
        })
    ));
    assert_eq!(registered_entries(&service).await, 1);
}
