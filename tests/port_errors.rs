//! A storage port's failure, through `OwnerAccess`, names the port: the owners in one
//! in-memory directory, the workflow's state in a separate in-memory store, each
//! behind a wrapper that can make its calls fail. For the roster, review and send,
//! redeem and mass edit, a failing directory gives `Error::Repository { side:
//! Side::Directory, .. }` and a failing store `Side::Store`, with the port's error as
//! the source (and its cause beneath it); a failure during the send engine's run is a
//! stop naming the side. Where a call crosses the ports, the tests check what the
//! first port kept when the second failed, as the methods' docs say.

mod common;

use std::error::Error as _;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use owner_access::domain::{
    ActivityEntry, ActivityKind, Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts,
    DeliveryOutcome, Draft, DraftId, InvitationState, NewBatch, Owner, OwnerId, Page, SenderId,
    Timestamp, TokenHash, TokenRecord, TokenRejection,
};
use owner_access::eligibility::OwnerFilter;
use owner_access::prelude::*;
use owner_access::repository::{
    EmailEdit, EmailHolder, HeldClaims, Marked, OwedRegistration, RedeemOutcome, RepoResult,
    RepositoryError, SendSlots,
};
use owner_access::{
    Error, InMemoryRepository, InMemoryTransport, ManualClock, OwnerAccess, Selection, Side,
    StopReason, async_trait,
};

/// Which calls of a port fail.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// None: the port works.
    Up,
    /// Every call.
    All,
    /// The calls named (as the trait's methods).
    Only(&'static [&'static str]),
}

/// An in-memory adapter whose calls fail while its outage says so. The same type
/// serves as the directory and as the store: two values, two separate ports.
struct Breakable {
    name: &'static str,
    inner: InMemoryRepository,
    outage: Mutex<Outage>,
}

impl Breakable {
    fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            inner: InMemoryRepository::new(),
            outage: Mutex::new(Outage::Up),
        })
    }

    fn set(&self, outage: Outage) {
        *self.outage.lock().unwrap() = outage;
    }

    /// The call's failure, if the outage covers it: unavailable, with a cause that
    /// names the call.
    fn check(&self, call: &'static str) -> RepoResult<()> {
        let down = match *self.outage.lock().unwrap() {
            Outage::Up => false,
            Outage::All => true,
            Outage::Only(calls) => calls.contains(&call),
        };
        if down {
            return Err(RepositoryError::Unavailable {
                store: self.name.to_owned(),
                source: format!("{call}: injected outage").into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Breakable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

// Every method named, defaulted ones included, so that none bypasses the check.
#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl OwnerRepository for Breakable {
    async fn community(&self, id: &CommunityId) -> RepoResult<Option<Community>> {
        self.check("community")?;
        self.inner.community(id).await
    }
    async fn communities(&self) -> RepoResult<Vec<Community>> {
        self.check("communities")?;
        self.inner.communities().await
    }
    async fn owners(&self, ids: &[OwnerId]) -> RepoResult<Vec<Owner>> {
        self.check("owners")?;
        self.inner.owners(ids).await
    }
    async fn community_owners(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<Owner>> {
        self.check("community_owners")?;
        self.inner.community_owners(community, filter).await
    }
    async fn community_owner_ids(
        &self,
        community: &CommunityId,
        filter: &OwnerFilter,
    ) -> RepoResult<Vec<OwnerId>> {
        self.check("community_owner_ids")?;
        self.inner.community_owner_ids(community, filter).await
    }
    async fn email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.check("email_holders")?;
        self.inner.email_holders(keys).await
    }
    async fn shared_email_holders(&self, keys: &[String]) -> RepoResult<Vec<EmailHolder>> {
        self.check("shared_email_holders")?;
        self.inner.shared_email_holders(keys).await
    }
    async fn update_emails(&self, edits: &[EmailEdit]) -> RepoResult<Vec<OwnerId>> {
        self.check("update_emails")?;
        self.inner.update_emails(edits).await
    }
    async fn mark_registered(
        &self,
        owner: &OwnerId,
        sent_to: &str,
        at: Timestamp,
    ) -> RepoResult<Marked> {
        self.check("mark_registered")?;
        self.inner.mark_registered(owner, sent_to, at).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl InvitationStore for Breakable {
    async fn save_draft(&self, draft: &Draft) -> RepoResult<()> {
        self.check("save_draft")?;
        self.inner.save_draft(draft).await
    }
    async fn draft(&self, id: &DraftId) -> RepoResult<Option<Draft>> {
        self.check("draft")?;
        self.inner.draft(id).await
    }
    async fn drafts(&self, community: &CommunityId) -> RepoResult<Vec<Draft>> {
        self.check("drafts")?;
        self.inner.drafts(community).await
    }
    async fn delete_draft(&self, id: &DraftId) -> RepoResult<bool> {
        self.check("delete_draft")?;
        self.inner.delete_draft(id).await
    }
    async fn create_batch(&self, batch: &NewBatch) -> RepoResult<()> {
        self.check("create_batch")?;
        self.inner.create_batch(batch).await
    }
    async fn batch(&self, id: &BatchId) -> RepoResult<Option<Batch>> {
        self.check("batch")?;
        self.inner.batch(id).await
    }
    async fn batches(&self, community: &CommunityId) -> RepoResult<Vec<Batch>> {
        self.check("batches")?;
        self.inner.batches(community).await
    }
    async fn take_send_slots(
        &self,
        batch: &BatchId,
        interval: Duration,
        count: u32,
        now: Timestamp,
    ) -> RepoResult<SendSlots> {
        self.check("take_send_slots")?;
        self.inner
            .take_send_slots(batch, interval, count, now)
            .await
    }
    async fn claim_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<Delivery>> {
        self.check("claim_deliveries")?;
        self.inner
            .claim_deliveries(batch, sender, limit, lease, now)
            .await
    }
    async fn renew_claims(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
        lease: Duration,
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        self.check("renew_claims")?;
        self.inner
            .renew_claims(batch, sender, owners, lease, now)
            .await
    }
    async fn record_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &[(OwnerId, DeliveryOutcome)],
        now: Timestamp,
    ) -> RepoResult<Vec<OwnerId>> {
        self.check("record_deliveries")?;
        self.inner
            .record_deliveries(batch, sender, outcomes, now)
            .await
    }
    async fn release_deliveries(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<OwnerId>> {
        self.check("release_deliveries")?;
        self.inner.release_deliveries(batch, sender, owners).await
    }
    async fn held_claims(&self, batch: &BatchId, now: Timestamp) -> RepoResult<HeldClaims> {
        self.check("held_claims")?;
        self.inner.held_claims(batch, now).await
    }
    async fn revoke_claims(&self, batch: &BatchId) -> RepoResult<usize> {
        self.check("revoke_claims")?;
        self.inner.revoke_claims(batch).await
    }
    async fn invitation_states(
        &self,
        owners: &[OwnerId],
    ) -> RepoResult<Vec<(OwnerId, InvitationState)>> {
        self.check("invitation_states")?;
        self.inner.invitation_states(owners).await
    }
    async fn deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.check("deliveries")?;
        self.inner.deliveries(batch).await
    }
    async fn delivery_counts(&self, batch: &BatchId) -> RepoResult<DeliveryCounts> {
        self.check("delivery_counts")?;
        self.inner.delivery_counts(batch).await
    }
    async fn failed_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.check("failed_deliveries")?;
        self.inner.failed_deliveries(batch).await
    }
    async fn skipped_deliveries(&self, batch: &BatchId) -> RepoResult<Vec<Delivery>> {
        self.check("skipped_deliveries")?;
        self.inner.skipped_deliveries(batch).await
    }
    async fn requeue_failed(&self, batch: &BatchId) -> RepoResult<usize> {
        self.check("requeue_failed")?;
        self.inner.requeue_failed(batch).await
    }
    async fn issue_token(&self, token: &TokenRecord) -> RepoResult<()> {
        self.check("issue_token")?;
        self.inner.issue_token(token).await
    }
    async fn issue_tokens(&self, tokens: &[TokenRecord]) -> RepoResult<()> {
        self.check("issue_tokens")?;
        self.inner.issue_tokens(tokens).await
    }
    async fn token(&self, hash: &TokenHash) -> RepoResult<Option<TokenRecord>> {
        self.check("token")?;
        self.inner.token(hash).await
    }
    async fn redeem_token(&self, hash: &TokenHash, now: Timestamp) -> RepoResult<RedeemOutcome> {
        self.check("redeem_token")?;
        self.inner.redeem_token(hash, now).await
    }
    async fn owed_registrations(&self) -> RepoResult<Vec<OwedRegistration>> {
        self.check("owed_registrations")?;
        self.inner.owed_registrations().await
    }
    async fn settle_registration(
        &self,
        token: &TokenHash,
        activity: Option<&ActivityEntry>,
    ) -> RepoResult<bool> {
        self.check("settle_registration")?;
        self.inner.settle_registration(token, activity).await
    }
    async fn answer_redeem(&self, token: &TokenHash, now: Timestamp) -> RepoResult<bool> {
        self.check("answer_redeem")?;
        self.inner.answer_redeem(token, now).await
    }
    async fn revoke_tokens(&self, owners: &[OwnerId], now: Timestamp) -> RepoResult<usize> {
        self.check("revoke_tokens")?;
        self.inner.revoke_tokens(owners, now).await
    }
    async fn append_activity(&self, entry: &ActivityEntry) -> RepoResult<()> {
        self.check("append_activity")?;
        self.inner.append_activity(entry).await
    }
    async fn activity(
        &self,
        community: &CommunityId,
        page: Page,
    ) -> RepoResult<Vec<ActivityEntry>> {
        self.check("activity")?;
        self.inner.activity(community, page).await
    }
}

/// A service over a breakable directory holding the mixed owners of `c1` and a
/// separate breakable store.
struct Ports {
    directory: Arc<Breakable>,
    store: Arc<Breakable>,
    transport: Arc<InMemoryTransport>,
    service: OwnerAccess,
    community: CommunityId,
}

async fn ports() -> Ports {
    let directory = Breakable::new("test directory");
    let store = Breakable::new("test store");
    let transport = Arc::new(InMemoryTransport::new());
    let community = CommunityId::new("c1").unwrap();
    directory
        .inner
        .upsert_community(&Community::new(community.clone(), "Maple Grove HOA"))
        .await
        .unwrap();
    directory
        .inner
        .upsert_owners(&mixed_owners(3), t0())
        .await
        .unwrap();
    let service = OwnerAccess::builder_with(directory.clone(), store.clone(), transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .clock(Arc::new(ManualClock::new(t0())))
        .send_options(fast_options())
        .build()
        .unwrap();
    Ports {
        directory,
        store,
        transport,
        service,
        community,
    }
}

impl Ports {
    fn selection(&self) -> Selection {
        ["e0", "e1", "e2"].into_iter().map(oid).collect()
    }

    async fn review(&self) -> owner_access::Review {
        let invite = self
            .service
            .compose(&self.community, &self.selection())
            .await
            .unwrap();
        self.service.review(&invite).await.unwrap()
    }

    /// Sends to e0..e2 with both ports up; gives back e0's link.
    async fn sent_link(&self) -> String {
        let report = self.service.send(self.review().await).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        let message = self
            .transport
            .messages()
            .into_iter()
            .find(|m| m.envelope.to.as_str() == "e0@example.org")
            .expect("e0's message");
        token_in(&message.bytes)
    }
}

/// The call failed on `side`: the error says so in words, the port's error is its
/// source, and the injected cause (naming `call`) is beneath that.
#[track_caller]
fn assert_side<T: fmt::Debug>(result: Result<T, Error>, side: Side, call: &str) {
    let error = match result {
        Err(error) => error,
        Ok(value) => panic!("expected {side} to fail, got {value:?}"),
    };
    let Error::Repository {
        side: found,
        error: ref inner,
    } = error
    else {
        panic!("expected a repository error, got {error:?}");
    };
    assert_eq!(found, side, "{error}");
    assert!(
        matches!(inner, RepositoryError::Unavailable { .. }),
        "{inner:?}"
    );
    let words = match side {
        Side::Directory => "the owner directory failed: test directory is unavailable",
        Side::Store => "the invitation store failed: test store is unavailable",
        other => panic!("a side this test does not know: {other:?}"),
    };
    assert_eq!(error.to_string(), words);
    let source = error.source().expect("the port's error is the source");
    assert!(
        source.downcast_ref::<RepositoryError>().is_some(),
        "{source:?}"
    );
    let cause = source.source().expect("the port's own cause").to_string();
    assert_eq!(cause, format!("{call}: injected outage"));
    assert_eq!(
        owner_access::error::with_causes(&error),
        format!("{words}: {call}: injected outage")
    );
}

#[tokio::test]
async fn the_roster_names_the_side_that_failed() {
    let p = ports().await;
    let all = OwnerFilter::all();
    p.directory.set(Outage::All);
    assert_side(
        p.service.roster(&p.community, &all).await,
        Side::Directory,
        "community",
    );
    p.directory.set(Outage::Only(&["community_owners"]));
    assert_side(
        p.service.roster(&p.community, &all).await,
        Side::Directory,
        "community_owners",
    );
    p.directory.set(Outage::Up);
    p.store.set(Outage::Only(&["invitation_states"]));
    assert_side(
        p.service.roster(&p.community, &all).await,
        Side::Store,
        "invitation_states",
    );
    p.store.set(Outage::Up);
    let roster = p.service.roster(&p.community, &all).await.unwrap();
    assert_eq!(roster.rows.len(), mixed_owners(3).len());
}

#[tokio::test]
async fn review_and_send_name_the_side_that_failed_and_store_nothing() {
    let p = ports().await;
    let invite = p
        .service
        .compose(&p.community, &p.selection())
        .await
        .unwrap();
    p.directory.set(Outage::Only(&["owners"]));
    assert_side(p.service.review(&invite).await, Side::Directory, "owners");
    p.directory.set(Outage::Up);
    p.store.set(Outage::Only(&["owed_registrations"]));
    assert_side(
        p.service.review(&invite).await,
        Side::Store,
        "owed_registrations",
    );
    p.store.set(Outage::Up);

    // The batch cannot be stored: an error, and nothing stored or sent.
    let review = p.service.review(&invite).await.unwrap();
    p.store.set(Outage::Only(&["create_batch"]));
    assert_side(p.service.send(review).await, Side::Store, "create_batch");
    p.store.set(Outage::Up);
    assert!(
        p.store
            .inner
            .batches(&p.community)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(p.transport.messages().is_empty());
}

#[tokio::test]
async fn a_failure_during_the_run_is_a_stop_naming_the_side() {
    // The directory fails when the engine reads the claimed owners for the check just
    // before sending: the chunk is not sent, and the stop names the directory.
    let p = ports().await;
    let review = p.review().await;
    p.directory.set(Outage::Only(&["owners"]));
    let report = p.service.send(review).await.expect("a stop, not an error");
    match &report.stopped {
        Some(StopReason::StoreUnavailable { side, error }) => {
            assert_eq!(*side, Side::Directory, "{error}");
            assert_eq!(
                error,
                "test directory is unavailable: owners: injected outage"
            );
        }
        other => panic!("expected a port stop, got {other:?}"),
    }
    assert_eq!(
        report.stopped.as_ref().unwrap().to_string(),
        "the owner directory failed during the send: test directory is unavailable: owners: injected outage"
    );
    assert_eq!((report.sent, report.pending), (0, 3), "{report:?}");
    assert!(p.transport.messages().is_empty());

    // The store fails to record the outcomes: the messages went out, the stop names
    // the store.
    let p = ports().await;
    let review = p.review().await;
    p.store.set(Outage::Only(&["record_deliveries"]));
    let report = p.service.send(review).await.expect("a stop, not an error");
    match &report.stopped {
        Some(StopReason::StoreUnavailable { side, error }) => {
            assert_eq!(*side, Side::Store, "{error}");
            assert!(
                error.contains("record_deliveries: injected outage"),
                "{error}"
            );
        }
        other => panic!("expected a port stop, got {other:?}"),
    }
    assert_eq!(report.unrecorded, 3, "{report:?}");
    assert_eq!(p.transport.messages().len(), 3);
}

#[tokio::test]
async fn a_redeem_names_the_side_and_the_link_survives_a_failure_before_it_is_spent() {
    let p = ports().await;
    let link = p.sent_link().await;

    p.directory.set(Outage::Only(&["owners"]));
    assert_side(p.service.redeem(&link).await, Side::Directory, "owners");
    p.directory.set(Outage::Up);
    p.store.set(Outage::Only(&["redeem_token"]));
    assert_side(p.service.redeem(&link).await, Side::Store, "redeem_token");
    p.store.set(Outage::Up);
    // Neither failure spent the link.
    assert!(p.store.inner.owed_registrations().await.unwrap().is_empty());
    let verified = p.service.verify(&link).await.unwrap();
    assert_eq!(verified.owner.id, oid("e0"));

    let registration = p.service.redeem(&link).await.unwrap();
    assert_eq!(registration.owner.id, oid("e0"));
    assert!(registration.owner.is_registered());
}

#[tokio::test]
async fn a_redeem_whose_directory_mark_fails_leaves_the_registration_owed_and_the_next_click_completes_it()
 {
    let p = ports().await;
    let link = p.sent_link().await;

    p.directory.set(Outage::Only(&["mark_registered"]));
    assert_side(
        p.service.redeem(&link).await,
        Side::Directory,
        "mark_registered",
    );
    // The store's step was committed: the token is spent and the registration owed;
    // the directory has not marked the owner.
    let owed = p.store.inner.owed_registrations().await.unwrap();
    assert_eq!(owed.len(), 1, "{owed:?}");
    assert_eq!(owed[0].owner, oid("e0"));
    let e0 = p.directory.inner.owners(&[oid("e0")]).await.unwrap();
    assert!(!e0[0].is_registered());

    // While the directory is down, a verify cannot complete it either, and says so.
    assert_side(
        p.service.verify(&link).await,
        Side::Directory,
        "mark_registered",
    );

    // Back up: the next click of the link completes the registration and answers.
    p.directory.set(Outage::Up);
    let registration = p.service.redeem(&link).await.unwrap();
    assert_eq!(registration.owner.id, oid("e0"));
    assert!(p.store.inner.owed_registrations().await.unwrap().is_empty());
    let e0 = p.directory.inner.owners(&[oid("e0")]).await.unwrap();
    assert!(e0[0].is_registered());
    let again = p.service.redeem(&link).await;
    assert!(
        matches!(
            again,
            Err(Error::InvalidToken {
                reason: TokenRejection::AlreadyUsed
            })
        ),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_mass_edit_names_the_side_and_says_what_the_directory_kept() {
    let p = ports().await;
    let link = p.sent_link().await;
    let edits = [EmailEdit {
        owner: oid("e0"),
        email: Some("e0.new@example.org".into()),
    }];
    let email_of_e0 = || async {
        p.directory.inner.owners(&[oid("e0")]).await.unwrap()[0]
            .primary_email
            .clone()
    };

    // The directory refuses: nothing changed anywhere.
    p.directory.set(Outage::Only(&["email_holders"]));
    assert_side(
        p.service.mass_edit_emails(&p.community, &edits).await,
        Side::Directory,
        "email_holders",
    );
    p.directory.set(Outage::Only(&["update_emails"]));
    assert_side(
        p.service.mass_edit_emails(&p.community, &edits).await,
        Side::Directory,
        "update_emails",
    );
    p.directory.set(Outage::Up);
    assert_eq!(email_of_e0().await.as_deref(), Some("e0@example.org"));
    p.service.verify(&link).await.expect("the link still works");

    // The store fails after the directory committed: the new address is kept, the
    // activity entry is missing, and the old link no longer works anyway (a link
    // works only while the owner's email is the address it was sent to).
    p.store.set(Outage::Only(&["revoke_tokens"]));
    assert_side(
        p.service.mass_edit_emails(&p.community, &edits).await,
        Side::Store,
        "revoke_tokens",
    );
    p.store.set(Outage::Up);
    assert_eq!(email_of_e0().await.as_deref(), Some("e0.new@example.org"));
    let feed = p
        .service
        .activity(&p.community, Page::first(100))
        .await
        .unwrap();
    assert!(
        !feed
            .iter()
            .any(|e| matches!(e.kind, ActivityKind::MassEdit { .. })),
        "{feed:?}"
    );
    let verified = p.service.verify(&link).await;
    assert!(
        matches!(
            verified,
            Err(Error::InvalidToken {
                reason: TokenRejection::Revoked
            })
        ),
        "{verified:?}"
    );
}

/// A draft is stored and then its activity entry fails: the call still answers with
/// the draft's id (an `Err` would lose the id of a new draft, and saving the invite
/// again would store a second one), the feed misses the entry, and a warning says so.
#[tokio::test]
async fn a_saved_draft_whose_activity_entry_fails_is_answered_with_its_id() {
    use common::capture::{Capture, events, field};
    use tracing_subscriber::layer::SubscriberExt as _;

    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let p = ports().await;
    let invite = p
        .service
        .compose(&p.community, &Selection::of([oid("e0"), oid("e1")]))
        .await
        .unwrap();
    p.store.set(Outage::Only(&["append_activity"]));
    let id = p
        .service
        .save_draft(&invite)
        .await
        .expect("the draft is saved: its id is the answer");
    p.store.set(Outage::Up);

    let drafts = p.service.drafts(&p.community).await.unwrap();
    assert_eq!(drafts.len(), 1, "{drafts:?}");
    assert_eq!(drafts[0].id, id);
    let feed = p
        .service
        .activity(&p.community, Page::first(100))
        .await
        .unwrap();
    assert!(
        !feed
            .iter()
            .any(|e| matches!(e.kind, ActivityKind::DraftSaved { .. })),
        "{feed:?}"
    );
    let seen = capture.seen();
    let warned = events(
        &seen,
        "draft saved, but its activity entry could not be appended",
    );
    assert_eq!(warned.len(), 1, "{seen:?}");
    assert_eq!(warned[0].level, tracing::Level::WARN);
    assert_eq!(field(warned[0], "draft"), Some(id.as_str()));
    assert!(
        field(warned[0], "error").is_some_and(|e| e.contains("append_activity: injected outage")),
        "{:?}",
        warned[0]
    );
}
