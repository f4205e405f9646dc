//! Conformance suites any adapter can run against itself (feature `testing`).
//!
//! **Not semver-stable**: checks are added and tightened in minor releases, as the
//! contracts they check are clarified.
//!
//! Each check is a plain async function taking the adapter as a trait object and
//! returning a [`Failure`] naming the check and what went wrong. Repository checks
//! expect an empty repository and use fixed timestamps, never the system clock.
//! [`repository_conformance`] runs all of them, each on a fresh repository;
//! [`directory_conformance`] runs the directory checks against a host's own
//! [`OwnerRepository`], filled by the caller's seeding callback in its own schema; and
//! [`transport_conformance`] runs the transport checks against a transport and a
//! [`Sink`] that reads what arrived.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use owner_access::testing::{repository_conformance, transport_conformance};
//! use owner_access::{InMemoryRepository, InMemoryTransport};
//!
//! repository_conformance(|| async { InMemoryRepository::new() }).await.unwrap();
//! let transport = InMemoryTransport::new();
//! transport_conformance(&transport, &transport).await.unwrap();
//! # });
//! ```
//!
//! Concurrency checks interleave calls on one task (`join!`, `join_all`), so an adapter
//! that is not compare-and-set shows it wherever it awaits between its read and its
//! write, as any adapter over a database or a file does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;

use crate::adapters::memory::InMemoryTransport;
use crate::domain::{
    ActivityEntry, ActivityKind, Batch, BatchId, Community, CommunityId, Delivery, DeliveryCounts,
    DeliveryOutcome, DeliveryState, Draft, DraftId, EmailAddress, InvitationState, Mailbox,
    NewBatch, Owner, OwnerId, Page, PropertyId, SenderId, SkipReason, Timestamp, TokenHash,
    TokenRecord, TokenRejection, TokenState, delivered_key,
};
use crate::eligibility::{AccessFilter, EmailFilter, OwnerFilter};
use crate::invite::{Attachment, Invite};
use crate::repository::{
    ClaimHolder, EmailEdit, HeldClaims, InvitationStoreExt, Marked, OwedRegistration,
    OwnerDirectory, OwnerRepository, OwnerRepositoryExt, OwnerStorage, RedeemOutcome, RepoResult,
    RepositoryError,
};
use crate::selection::Selection;
use crate::transport::{Envelope, MailTransport};

/// A conformance check that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The check's name (its function's name).
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

impl std::error::Error for Failure {}

/// What a check returns.
pub type CheckResult = Result<(), Failure>;

/// Builds failures for one check.
#[derive(Clone, Copy)]
struct Ctx(&'static str);

impl Ctx {
    fn fail(self, message: impl Into<String>) -> Failure {
        Failure {
            check: self.0,
            message: message.into(),
        }
    }

    fn ok<T>(self, result: RepoResult<T>, doing: &str) -> Result<T, Failure> {
        result.map_err(|e| self.fail(format!("{doing}: unexpected error: {e}")))
    }

    fn ensure(self, condition: bool, message: impl FnOnce() -> String) -> CheckResult {
        if condition {
            Ok(())
        } else {
            Err(self.fail(message()))
        }
    }

    fn eq<T: PartialEq + fmt::Debug>(self, got: T, want: T, what: &str) -> CheckResult {
        self.ensure(got == want, || {
            format!("{what}: got {got:?}, expected {want:?}")
        })
    }

    /// The call must fail with the kind `is_kind` accepts.
    fn err<T: fmt::Debug>(
        self,
        result: RepoResult<T>,
        kind: &str,
        is_kind: impl Fn(&RepositoryError) -> bool,
        doing: &str,
    ) -> CheckResult {
        match result {
            Err(e) if is_kind(&e) => Ok(()),
            Err(e) => Err(self.fail(format!("{doing}: expected {kind}, got error {e}"))),
            Ok(v) => Err(self.fail(format!("{doing}: expected {kind}, got Ok({v:?})"))),
        }
    }
}

fn is_not_found(e: &RepositoryError) -> bool {
    matches!(e, RepositoryError::NotFound { .. })
}
fn is_already_exists(e: &RepositoryError) -> bool {
    matches!(e, RepositoryError::AlreadyExists { .. })
}
fn is_precondition(e: &RepositoryError) -> bool {
    matches!(e, RepositoryError::Precondition { .. })
}
fn is_not_holder(e: &RepositoryError) -> bool {
    matches!(e, RepositoryError::NotHolder { .. })
}

// ---------------------------------------------------------------------------------
// Fixtures.

const T0: i64 = 1_800_000_000;

/// A fixed time: `T0 + seconds`.
fn t(seconds: i64) -> Timestamp {
    Timestamp::from_unix_seconds(T0 + seconds)
}

fn cid(id: &str) -> CommunityId {
    CommunityId::new(id).expect("fixture id")
}

fn oid(id: &str) -> OwnerId {
    OwnerId::new(id).expect("fixture id")
}

fn sid(id: &str) -> SenderId {
    SenderId::new(id).expect("fixture id")
}

/// The lease the checks ask for.
const LEASE: Duration = Duration::from_secs(30);

fn claimed_state(at: Timestamp, holder: &SenderId, until: Timestamp) -> DeliveryState {
    DeliveryState::Claimed {
        at,
        holder: holder.clone(),
        until,
    }
}

fn sorted_owners(deliveries: &[Delivery]) -> Vec<&str> {
    let mut owners: Vec<&str> = deliveries.iter().map(|d| d.owner.as_str()).collect();
    owners.sort_unstable();
    owners
}

fn names(owners: &[&str]) -> Vec<String> {
    owners.iter().map(|o| (*o).to_owned()).collect()
}

fn sorted(owners: Vec<OwnerId>) -> Vec<String> {
    let mut owners: Vec<String> = owners.into_iter().map(String::from).collect();
    owners.sort_unstable();
    owners
}

fn bid(id: &str) -> BatchId {
    BatchId::new(id).expect("fixture id")
}

fn addr(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).expect("fixture address")
}

fn owner(id: &str, community: &str, email: Option<&str>) -> Owner {
    let o = Owner::new(
        oid(id),
        cid(community),
        PropertyId::new(format!("p-{id}")).expect("fixture id"),
        "Ann",
        format!("Lee {id}"),
    )
    .with_property_address(format!("{id} Oak Avenue"));
    match email {
        Some(e) => o.with_primary_email(e),
        None => o,
    }
}

fn invite(community: &str) -> Invite {
    Invite {
        community: cid(community),
        // An id with JSON's and SQL's special characters: a store must keep it as is.
        selection: Selection::of([oid("o1"), oid("o2"), oid(r#"o9 "Zoë" \ 'x'"#)]),
        subject: "Register for the {{community.name}} owner portal".into(),
        text_body: Some("Hello {{owner.first_name}},\n\n{{registration_link}}\n".into()),
        html_body: None,
        reply_to: Some("board@example.org".into()),
        summary_to: None,
        attachments: Vec::new(),
        draft: None,
        // What the manager set: a store must keep both (a draft sends with them).
        from: Some("\"Zoë's Board\" <board@example.org>".into()),
        portal_url: Some("https://portal.example.org/register?community=oak&x=\"1\"".into()),
    }
}

fn batch(id: &str, community: &str, created_at: Timestamp) -> Batch {
    Batch {
        id: bid(id),
        community: cid(community),
        invite: invite(community),
        sender: Mailbox::parse("Oak HOA <hoa@example.org>").expect("fixture mailbox"),
        portal_url: "https://portal.example.org/register".into(),
        token_ttl_seconds: 14 * 24 * 3600,
        created_at,
        resend: false,
    }
}

fn new_batch(id: &str, community: &str, owners: &[&str], at: Timestamp) -> NewBatch {
    NewBatch {
        batch: batch(id, community, at),
        deliveries: owners
            .iter()
            .map(|o| (oid(o), addr(&format!("{o}@example.org"))))
            .collect(),
        activity: ActivityEntry {
            community: cid(community),
            at,
            kind: ActivityKind::BatchCreated {
                batch: bid(id),
                recipients: owners.len(),
                excluded: 0,
                resend: false,
            },
        },
    }
}

fn hash(n: u64) -> TokenHash {
    let mut bytes = [0x5a; 32];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    TokenHash(bytes)
}

fn token(
    n: u64,
    owner: &str,
    batch: &str,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> TokenRecord {
    TokenRecord {
        hash: hash(n),
        owner: oid(owner),
        batch: bid(batch),
        issued_at,
        expires_at,
        sent_to: format!("{owner}@example.org"),
        state: TokenState::Live,
    }
}

/// A token as the send engine stores it at claim, before its message goes out.
fn pending_token(
    n: u64,
    owner: &str,
    batch: &str,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> TokenRecord {
    TokenRecord {
        state: TokenState::Pending,
        ..token(n, owner, batch, issued_at, expires_at)
    }
}

fn edit(owner: &str, email: Option<&str>) -> EmailEdit {
    EmailEdit {
        owner: oid(owner),
        email: email.map(str::to_owned),
    }
}

fn ids(owners: &[Owner]) -> BTreeSet<String> {
    owners.iter().map(|o| o.id.to_string()).collect()
}

async fn token_state(c: Ctx, repo: &dyn OwnerStorage, n: u64) -> Result<TokenState, Failure> {
    c.ok(repo.token(&hash(n)).await, "token")?
        .map(|t| t.state)
        .ok_or_else(|| c.fail(format!("token {n} is missing")))
}

async fn get_owner(c: Ctx, repo: &dyn OwnerStorage, id: &str) -> Result<Owner, Failure> {
    c.ok(repo.owner(&oid(id)).await, "owner")?
        .ok_or_else(|| c.fail(format!("owner `{id}` is missing")))
}

/// The store's invitation state of one owner.
async fn invitation_state(
    c: Ctx,
    repo: &dyn OwnerStorage,
    id: &str,
) -> Result<Option<InvitationState>, Failure> {
    let mut states = c.ok(
        repo.invitation_states(&[oid(id)]).await,
        "invitation_states",
    )?;
    c.ensure(states.len() <= 1, || {
        format!("invitation_states of one owner gave {states:?}")
    })?;
    Ok(states.pop().map(|(_, state)| state))
}

async fn all_activity(
    c: Ctx,
    repo: &dyn OwnerStorage,
    community: &str,
) -> Result<Vec<ActivityEntry>, Failure> {
    c.ok(
        repo.activity(&cid(community), Page::first(10_000)).await,
        "activity",
    )
}

/// The counts must agree with the deliveries' states.
async fn check_counts(c: Ctx, repo: &dyn OwnerStorage, batch: &str) -> CheckResult {
    let deliveries = c.ok(repo.deliveries(&bid(batch)).await, "deliveries")?;
    let mut want = DeliveryCounts::default();
    for d in &deliveries {
        want.add(&d.state);
    }
    let got = c.ok(repo.delivery_counts(&bid(batch)).await, "delivery_counts")?;
    c.eq(got, want, "delivery_counts against the deliveries' states")?;
    let skipped: Vec<Delivery> = deliveries
        .iter()
        .filter(|d| matches!(d.state, DeliveryState::Skipped { .. }))
        .cloned()
        .collect();
    let failed: Vec<Delivery> = deliveries
        .into_iter()
        .filter(|d| matches!(d.state, DeliveryState::Failed { .. }))
        .collect();
    c.eq(
        c.ok(
            repo.skipped_deliveries(&bid(batch)).await,
            "skipped_deliveries",
        )?,
        skipped,
        "skipped_deliveries against the deliveries' states",
    )?;
    c.eq(
        c.ok(
            repo.failed_deliveries(&bid(batch)).await,
            "failed_deliveries",
        )?,
        failed,
        "failed_deliveries against the deliveries' states",
    )
}

async fn delivery(
    c: Ctx,
    repo: &dyn OwnerStorage,
    batch: &str,
    owner: &str,
) -> Result<Delivery, Failure> {
    c.ok(repo.deliveries(&bid(batch)).await, "deliveries")?
        .into_iter()
        .find(|d| d.owner.as_str() == owner)
        .ok_or_else(|| c.fail(format!("delivery `{batch}/{owner}` is missing")))
}

fn outcome_name(outcome: &RedeemOutcome) -> String {
    match outcome {
        RedeemOutcome::Redeemed { .. } => "Redeemed".into(),
        RedeemOutcome::Rejected(reason) => format!("Rejected({reason:?})"),
    }
}

fn sent(expires_at: Timestamp, attempts: u32) -> DeliveryOutcome {
    DeliveryOutcome::Sent {
        expires_at,
        attempts,
    }
}

fn failed(error: &str, attempts: u32) -> DeliveryOutcome {
    DeliveryOutcome::Failed {
        error: error.into(),
        attempts,
    }
}

// ---------------------------------------------------------------------------------
// Communities and owners.

/// `upsert_community` / `community`: round trip (time zone and branding included),
/// replace (what the new one leaves unset is cleared), missing is `None`.
pub async fn communities_round_trip(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("communities_round_trip");
    c.eq(
        c.ok(repo.community(&cid("c1")).await, "community")?,
        None,
        "missing community",
    )?;
    // Everything a community sets for its letters is kept.
    let oak = Community::new(cid("c1"), "Oak HOA")
        .with_reply_to(addr("board@oak.example.org"))
        .with_time_zone(crate::domain::TimeZoneName::new("Europe/Athens").expect("a zone"))
        .with_branding(
            crate::domain::Branding::new()
                .with_logo_url("https://cdn.oak.example.org/logo.png?v=2&size=96")
                .and_then(|b| b.with_accent_color("#2e7d32"))
                .expect("valid branding"),
        );
    c.ok(repo.upsert_community(&oak).await, "upsert_community")?;
    c.eq(
        c.ok(repo.community(&cid("c1")).await, "community")?,
        Some(oak),
        "stored community",
    )?;
    let renamed = Community::new(cid("c1"), "Oak Condominium");
    c.ok(repo.upsert_community(&renamed).await, "upsert_community")?;
    c.eq(
        c.ok(repo.community(&cid("c1")).await, "community")?,
        Some(renamed),
        "replaced community",
    )
}

/// `upsert_owners` / `owner` / `owners`: round trip, addresses stored as given
/// (invalid or shared), missing ids left out.
pub async fn owners_round_trip(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("owners_round_trip");
    let stored = vec![
        owner("a", "c1", Some("ann@example.org")),
        owner("b", "c1", Some("not an email")),
        owner("c", "c2", Some("  ANN@example.org ")),
        owner("d", "c1", None),
    ];
    c.ok(repo.upsert_owners(&stored, t(0)).await, "upsert_owners")?;
    for o in &stored {
        c.eq(
            c.ok(repo.owner(&o.id).await, "owner")?.as_ref(),
            Some(o),
            "owner as stored",
        )?;
    }
    c.eq(
        c.ok(repo.owner(&oid("zz")).await, "owner")?,
        None,
        "missing owner",
    )?;
    let got = c.ok(
        repo.owners(&[oid("c"), oid("zz"), oid("a")]).await,
        "owners",
    )?;
    c.eq(got.len(), 2, "owners() count")?;
    for o in &got {
        c.ensure(stored.contains(o), || format!("owners() returned {o:?}"))?;
    }
    c.eq(
        ids(&got),
        ["a", "c"].map(String::from).into(),
        "owners() ids",
    )
}

/// `upsert_owners` stores [`Owner::merge_from_host`]: registration is sticky, an
/// invitation in progress is kept, a host saying "registered" wins; host data is
/// replaced.
pub async fn upsert_merge_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("upsert_merge_rules");
    let before = vec![
        owner("reg", "c1", Some("reg@example.org")).with_registered(Some(t(-50))),
        owner("inv", "c1", Some("inv@example.org")),
        owner("host", "c1", Some("host@example.org")),
        owner("new", "c1", None),
    ];
    c.ok(repo.upsert_owners(&before, t(0)).await, "upsert_owners")?;
    let incoming = vec![
        owner("reg", "c1", Some("reg@example.org")),
        owner("inv", "c1", Some("inv@example.org")),
        owner("host", "c1", Some("host@example.org")).with_registered(None),
        owner("new", "c1", Some("new@example.org")),
    ];
    let incoming: Vec<Owner> = incoming
        .into_iter()
        .map(|mut o| {
            o.first_name = "Renamed".into();
            o
        })
        .collect();
    c.ok(repo.upsert_owners(&incoming, t(10)).await, "upsert_owners")?;
    for (old, new) in before.iter().zip(&incoming) {
        let (want, _) = Owner::merge_from_host(Some(old), new);
        c.eq(
            get_owner(c, repo, old.id.as_str()).await?,
            want,
            "merged owner",
        )?;
    }
    let reg = get_owner(c, repo, "reg").await?;
    c.ensure(reg.is_registered() && reg.first_name == "Renamed", || {
        format!("a registered owner must stay registered and take host data: {reg:?}")
    })
}

/// `upsert_owners` revokes the owner's live and pending tokens at `now` when the
/// primary email changes (compared by `delivered_key`), and only then.
pub async fn upsert_email_change_revokes_tokens(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("upsert_email_change_revokes_tokens");
    let a = owner("a", "c1", Some("ann@example.org"));
    let b = owner("b", "c1", Some("bob@example.org"));
    c.ok(
        repo.upsert_owners(&[a.clone(), b.clone()], t(0)).await,
        "upsert_owners",
    )?;
    c.ok(
        repo.issue_token(&token(1, "a", "b1", t(1), t(1000))).await,
        "issue_token",
    )?;
    c.ok(
        repo.issue_token(&token(2, "b", "b1", t(1), t(1000))).await,
        "issue_token",
    )?;
    c.ok(
        repo.issue_token(&pending_token(3, "a", "b2", t(2), t(1000)))
            .await,
        "issue_token (pending)",
    )?;
    let same = a.clone().with_primary_email("  ANN@Example.org ");
    c.ok(repo.upsert_owners(&[same], t(20)).await, "upsert_owners")?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Live,
        "token after an upsert with the same address in other case",
    )?;
    let moved = a.with_primary_email("ann.lee@example.org");
    c.ok(
        repo.upsert_owners(&[moved, b], t(50)).await,
        "upsert_owners",
    )?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Revoked { at: t(50) },
        "token after the owner's email changed",
    )?;
    c.eq(
        token_state(c, repo, 3).await?,
        TokenState::Revoked { at: t(50) },
        "pending token after the owner's email changed",
    )?;
    c.eq(
        token_state(c, repo, 2).await?,
        TokenState::Live,
        "another owner's token",
    )
}

/// `upsert_owners` is one step: a reader running alongside sees all of it or none.
pub async fn upsert_is_all_or_nothing(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("upsert_is_all_or_nothing");
    let n = 100;
    let old: Vec<Owner> = (0..n)
        .map(|i| owner(&format!("old{i:03}"), "c1", None))
        .collect();
    c.ok(repo.upsert_owners(&old, t(0)).await, "upsert_owners")?;
    let mut update: Vec<Owner> = old
        .iter()
        .cloned()
        .map(|mut o| {
            o.first_name = "New".into();
            o
        })
        .collect();
    update.extend((0..n).map(|i| owner(&format!("new{i:03}"), "c1", None)));
    let all_ids: Vec<OwnerId> = update.iter().map(|o| o.id.clone()).collect();
    let done = AtomicBool::new(false);
    let writer = async {
        let r = repo.upsert_owners(&update, t(10)).await;
        done.store(true, Ordering::SeqCst);
        r
    };
    let reader = async {
        let mut seen = Vec::new();
        loop {
            let finished = done.load(Ordering::SeqCst);
            let owners = repo.owners(&all_ids).await?;
            let renamed = owners.iter().filter(|o| o.first_name == "New").count();
            let present = owners.len();
            seen.push((renamed, present));
            if finished {
                return Ok::<_, RepositoryError>(seen);
            }
            tokio::task::yield_now().await;
        }
    };
    let (written, seen) = futures::join!(writer, reader);
    c.ok(written, "upsert_owners")?;
    let seen = c.ok(seen, "owners")?;
    for (renamed, present) in &seen {
        c.ensure(
            (*renamed, *present) == (0, n) || (*renamed, *present) == (n, 2 * n),
            || {
                format!(
                    "a reader saw a partial upsert: {renamed} of {n} owners updated, \
                     {present} of {} present",
                    2 * n
                )
            },
        )?;
    }
    c.eq(seen.last().copied(), Some((n, 2 * n)), "final state")
}

/// `begin_import` is one step: nothing written through a session is visible before
/// `commit` (nor after the session is dropped), everything is after it; chunks follow
/// `upsert_owners`'s rules with the session's `now`, a later chunk merging onto an
/// earlier one; and a reader running alongside the commit sees the communities and
/// owners together or not at all.
pub async fn import_session_is_one_step(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("import_session_is_one_step");
    // Stored before: a registered owner and an invited one with a live token.
    let reg = owner("reg", "c1", Some("reg@example.org")).with_registered(Some(t(-5)));
    let moving = owner("moving", "c1", Some("old@example.org"));
    c.ok(
        repo.upsert_owners(&[reg.clone(), moving.clone()], t(0))
            .await,
        "upsert_owners",
    )?;
    c.ok(
        repo.issue_token(&token(1, "moving", "b1", t(1), t(1000)))
            .await,
        "issue_token",
    )?;
    let imported = Community::new(cid("imported"), "Imported HOA");
    let first: Vec<Owner> = (0..60)
        .map(|i| {
            owner(
                &format!("i{i:02}"),
                "imported",
                Some(&format!("i{i}@example.org")),
            )
        })
        .collect();
    let mut second: Vec<Owner> = (60..120)
        .map(|i| {
            owner(
                &format!("i{i:02}"),
                "imported",
                Some(&format!("i{i}@example.org")),
            )
        })
        .collect();
    // Given again in a later chunk: merged onto the first.
    let mut again = first[0].clone();
    again.first_name = "Second".into();
    second.push(again.clone());
    let mut reg_again = reg.clone();
    reg_again.registered = None;
    reg_again.first_name = "Renamed".into();
    second.push(reg_again.clone());
    second.push(moving.clone().with_primary_email("new@example.org"));
    let ids: Vec<OwnerId> = first.iter().chain(&second).map(|o| o.id.clone()).collect();
    let visible = || {
        let ids = &ids;
        async move {
            let community = c.ok(repo.community(&cid("imported")).await, "community")?;
            let owners = c.ok(repo.owners(ids).await, "owners")?;
            let imported = owners
                .iter()
                .filter(|o| o.community == cid("imported"))
                .count();
            Ok::<_, Failure>((community.is_some(), imported))
        }
    };

    // Dropped without a commit: nothing is kept.
    {
        let mut session = c.ok(repo.begin_import(t(30)).await, "begin_import")?;
        c.ok(
            session
                .upsert_communities(std::slice::from_ref(&imported))
                .await,
            "upsert_communities",
        )?;
        c.ok(
            session.upsert_owners(&first).await,
            "upsert_owners (session)",
        )?;
    }
    c.eq(visible().await?, (false, 0), "after a dropped session")?;

    let mut session = c.ok(repo.begin_import(t(30)).await, "begin_import")?;
    c.ok(
        session
            .upsert_communities(std::slice::from_ref(&imported))
            .await,
        "upsert_communities",
    )?;
    c.ok(
        session.upsert_owners(&first).await,
        "upsert_owners (session)",
    )?;
    c.eq(visible().await?, (false, 0), "before the commit")?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Live,
        "a token before the commit that revokes it",
    )?;
    c.ok(
        session.upsert_owners(&second).await,
        "upsert_owners (session)",
    )?;
    c.eq(visible().await?, (false, 0), "before the commit")?;
    let done = AtomicBool::new(false);
    let commit = async {
        let r = session.commit().await;
        done.store(true, Ordering::SeqCst);
        r
    };
    let reader = async {
        let mut seen = Vec::new();
        loop {
            let finished = done.load(Ordering::SeqCst);
            seen.push(visible().await?);
            if finished {
                return Ok::<_, Failure>(seen);
            }
            tokio::task::yield_now().await;
        }
    };
    let (committed, seen) = futures::join!(commit, reader);
    c.ok(committed, "commit")?;
    // The community is read before the owners: once it shows, every owner must, and
    // the owners (one read) show all or none.
    for (community, owners) in seen? {
        c.ensure(owners == 120 || (owners == 0 && !community), || {
            format!(
                "a reader saw part of an import: the community stored {community}, then \
                 {owners} of 120 owners"
            )
        })?;
    }
    c.eq(visible().await?, (true, 120), "after the commit")?;
    c.eq(
        c.ok(repo.community(&cid("imported")).await, "community")?,
        Some(imported),
        "the imported community",
    )?;
    let (want, _) = Owner::merge_from_host(Some(&first[0]), &again);
    c.eq(
        get_owner(c, repo, again.id.as_str()).await?,
        want,
        "an owner given in two chunks",
    )?;
    let (want, _) = Owner::merge_from_host(Some(&reg), &reg_again);
    c.eq(get_owner(c, repo, "reg").await?, want, "a registered owner")?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Revoked { at: t(30) },
        "the token of an owner whose address the import changed",
    )
}

/// `community_owners` returns exactly the community's owners for which
/// [`OwnerFilter::matches_owner`] holds (the owners' own fields: registered or not,
/// email, search), for every filter, and follows owners that move between
/// communities; `community_owner_ids` returns exactly their ids, each once.
pub async fn community_owners_filters(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("community_owners_filters");
    let c1 = vec![
        owner("n1", "c1", Some("n1@example.org")).with_property_address("12 Elm Street"),
        owner("n2", "c1", None),
        owner("n3", "c1", Some("   ")),
        owner("i1", "c1", Some("i1@example.org")),
        owner("i2", "c1", Some("bad address")),
        owner("r1", "c1", Some("R1@Example.org")).with_registered(Some(t(0))),
        owner("r2", "c1", None).with_registered(None),
    ];
    let others = vec![
        owner("x1", "c2", Some("x1@example.org")),
        owner("m1", "c2", Some("m1@example.org")),
    ];
    c.ok(repo.upsert_owners(&c1, t(0)).await, "upsert_owners")?;
    c.ok(repo.upsert_owners(&others, t(0)).await, "upsert_owners")?;
    // m1 moves from c2 to c1.
    let moved = owner("m1", "c1", Some("m1@example.org"));
    c.ok(repo.upsert_owners(&[moved], t(1)).await, "upsert_owners")?;
    let mut members = Vec::new();
    for id in ["n1", "n2", "n3", "i1", "i2", "r1", "r2", "m1"] {
        members.push(get_owner(c, repo, id).await?);
    }
    let mut filters = Vec::new();
    for access in [
        AccessFilter::All,
        AccessFilter::Unregistered,
        AccessFilter::Invited,
        AccessFilter::Registered,
    ] {
        for email in [
            EmailFilter::Any,
            EmailFilter::WithEmail,
            EmailFilter::WithoutEmail,
        ] {
            for search in [None, Some("elm"), Some("LEE I"), Some("example.org")] {
                filters.push(OwnerFilter {
                    access,
                    email,
                    search: search.map(String::from),
                });
            }
        }
    }
    {
        for filter in &filters {
            let got = c.ok(
                repo.community_owners(&cid("c1"), filter).await,
                "community_owners",
            )?;
            c.eq(
                got.len(),
                ids(&got).len(),
                "community_owners without duplicates",
            )?;
            let want: Vec<Owner> = members
                .iter()
                .filter(|o| filter.matches_owner(o))
                .cloned()
                .collect();
            c.ensure(ids(&got) == ids(&want), || {
                format!(
                    "community_owners(c1, {filter:?}): got {:?}, expected {:?}",
                    ids(&got),
                    ids(&want)
                )
            })?;
            for o in &got {
                c.ensure(members.contains(o), || {
                    format!("returned a stale record {o:?}")
                })?;
            }
            let mut got_ids: Vec<String> = c
                .ok(
                    repo.community_owner_ids(&cid("c1"), filter).await,
                    "community_owner_ids",
                )?
                .iter()
                .map(ToString::to_string)
                .collect();
            got_ids.sort();
            let want_ids: Vec<String> = ids(&want).into_iter().collect();
            c.ensure(got_ids == want_ids, || {
                format!(
                    "community_owner_ids(c1, {filter:?}): got {got_ids:?}, expected {want_ids:?}"
                )
            })?;
        }
    }
    let c2_ids = c.ok(
        repo.community_owner_ids(&cid("c2"), &OwnerFilter::all())
            .await,
        "community_owner_ids",
    )?;
    c.eq(
        c2_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["x1".to_owned()],
        "community_owner_ids of c2 after m1 moved away",
    )?;
    let c2 = c.ok(
        repo.community_owners(&cid("c2"), &OwnerFilter::all()).await,
        "community_owners",
    )?;
    c.eq(ids(&c2), ["x1".to_owned()].into(), "c2 after m1 moved away")?;
    let none = c.ok(
        repo.community_owners(&cid("nowhere"), &OwnerFilter::all())
            .await,
        "community_owners",
    )?;
    c.eq(none.len(), 0, "owners of an unknown community")
}

/// `email_holders`: every holder in every community, addresses compared by
/// [`delivered_key`] (fullwidth letters, a soft hyphen,
/// needless quotes, case and white space make no other mailbox), invalid addresses
/// included, kept in step with upserts.
pub async fn email_holders_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("email_holders_rules");
    let owners = vec![
        owner("a", "c1", Some("Ann@Example.org ")),
        owner("b", "c1", Some(" ann@example.ORG")),
        owner("c", "c2", Some("ann@example.org")),
        owner("d", "c1", Some("not-an-email")),
        owner("e", "c2", Some("NOT-AN-EMAIL  ")),
        owner("f", "c1", None),
        owner("g", "c1", Some("   ")),
        owner("h", "c1", Some("other@example.org")),
        owner("i", "c2", Some("ann@ｅｘａｍｐｌｅ.org")),
        owner("j", "c1", Some("\"ann\"@exam\u{AD}ple.org")),
        owner("k", "c1", Some("ann@bücher.example")),
        owner("l", "c2", Some("ANN@XN--BCHER-KVA.example")),
    ];
    c.ok(repo.upsert_owners(&owners, t(0)).await, "upsert_owners")?;
    let holders = |keys: &[&str]| {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        async move {
            let as_set =
                |holders: &[crate::repository::EmailHolder]| -> BTreeSet<(String, String, String)> {
                    holders
                        .iter()
                        .map(|h| (h.key.clone(), h.owner.to_string(), h.property.to_string()))
                        .collect()
                };
            let got = c.ok(repo.email_holders(&keys).await, "email_holders")?;
            let set = as_set(&got);
            c.eq(got.len(), set.len(), "email_holders without duplicates")?;
            // shared_email_holders: the same, less the keys held once.
            let shared = c.ok(
                repo.shared_email_holders(&keys).await,
                "shared_email_holders",
            )?;
            let shared_set = as_set(&shared);
            c.eq(
                shared.len(),
                shared_set.len(),
                "shared_email_holders without duplicates",
            )?;
            let want_shared: BTreeSet<_> = set
                .iter()
                .filter(|(k, _, _)| set.iter().filter(|(k2, _, _)| k2 == k).count() > 1)
                .cloned()
                .collect();
            c.eq(shared_set, want_shared, "shared_email_holders")?;
            Ok::<_, Failure>(set)
        }
    };
    let row = |k: &str, o: &str| (k.to_owned(), o.to_owned(), format!("p-{o}"));
    let got = holders(&["ann@example.org", "not-an-email", "nobody@example.org"]).await?;
    let want: BTreeSet<_> = [
        row("ann@example.org", "a"),
        row("ann@example.org", "b"),
        row("ann@example.org", "c"),
        row("ann@example.org", "i"),
        row("ann@example.org", "j"),
        row("not-an-email", "d"),
        row("not-an-email", "e"),
    ]
    .into();
    c.eq(got, want, "holders of ann@example.org and not-an-email")?;
    c.eq(
        holders(&["ann@xn--bcher-kva.example"]).await?,
        [
            row("ann@xn--bcher-kva.example", "k"),
            row("ann@xn--bcher-kva.example", "l"),
        ]
        .into(),
        "holders of a U-label and an A-label",
    )?;
    c.eq(holders(&[]).await?, BTreeSet::new(), "holders of no key")?;
    // The index follows upserts.
    let moved = owner("a", "c1", Some("NEW@example.org"));
    c.ok(repo.upsert_owners(&[moved], t(1)).await, "upsert_owners")?;
    c.eq(
        holders(&["ann@example.org"]).await?,
        [
            row("ann@example.org", "b"),
            row("ann@example.org", "c"),
            row("ann@example.org", "i"),
            row("ann@example.org", "j"),
        ]
        .into(),
        "holders after a's address changed",
    )?;
    c.eq(
        holders(&["new@example.org"]).await?,
        [row("new@example.org", "a")].into(),
        "holders of a's new address",
    )?;
    let cleared = owner("a", "c1", None);
    c.ok(repo.upsert_owners(&[cleared], t(2)).await, "upsert_owners")?;
    c.eq(
        holders(&["new@example.org"]).await?,
        BTreeSet::new(),
        "holders after a's address was cleared",
    )
}

// ---------------------------------------------------------------------------------
// Mass edit.

/// `update_emails`: applies the edits as given, returns the ids whose
/// address changed, revokes their live tokens at `now`, appends the activity entry
/// and keeps `email_holders` in step; swapping addresses among edited owners is
/// allowed.
pub async fn update_emails_applies_and_revokes(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("update_emails_applies_and_revokes");
    let owners = vec![
        owner("a", "c1", Some("a@example.org")),
        owner("b", "c1", Some("b@example.org")),
        owner("c", "c1", Some("c@example.org")),
        owner("d", "c1", None),
        owner("e", "c2", None),
    ];
    c.ok(repo.upsert_owners(&owners, t(0)).await, "upsert_owners")?;
    for (n, o) in [(1, "a"), (2, "b"), (3, "c")] {
        c.ok(
            repo.issue_token(&token(n, o, "b1", t(1), t(1000))).await,
            "issue_token",
        )?;
    }
    for (n, o) in [(4, "a"), (5, "b")] {
        c.ok(
            repo.issue_token(&pending_token(n, o, "b2", t(2), t(1000)))
                .await,
            "issue_token (pending)",
        )?;
    }
    let edits = [
        edit("a", Some("a2@example.org")),
        edit("b", Some(" B@Example.org")),
        edit("c", None),
        edit("d", Some("d@example.org")),
        edit("e", Some("e@example.org")),
    ];
    let changed = c.ok(repo.update_emails(&edits).await, "update_emails")?;
    // The workflow then revokes the changed owners' links in the store (its
    // bookkeeping after the directory's commit).
    c.ok(repo.revoke_tokens(&changed, t(10)).await, "revoke_tokens")?;
    c.eq(
        c.ok(
            repo.revoke_tokens(&changed, t(11)).await,
            "revoke_tokens again",
        )?,
        0,
        "tokens left to revoke after revoke_tokens",
    )?;
    let changed: BTreeSet<String> = changed.iter().map(|o| o.to_string()).collect();
    c.eq(
        changed,
        ["a", "c", "d", "e"].map(String::from).into(),
        "changed ids",
    )?;
    for e in &edits {
        let o = get_owner(c, repo, e.owner.as_str()).await?;
        c.eq(o.primary_email, e.email.clone(), "stored address")?;
    }
    // Revoked by the bookkeeping (when exactly is `revoke_tokens_rules`'s to check: a
    // combined store may revoke in the edit's own step).
    for (n, whose) in [(1, "a's token"), (3, "c's token"), (4, "a's pending token")] {
        let state = token_state(c, repo, n).await?;
        c.ensure(matches!(state, TokenState::Revoked { .. }), || {
            format!("{whose} after the edit and revoke_tokens: {state:?}")
        })?;
    }
    c.eq(
        token_state(c, repo, 2).await?,
        TokenState::Live,
        "b's token (same address)",
    )?;
    c.eq(
        token_state(c, repo, 5).await?,
        TokenState::Pending,
        "b's pending token (same address)",
    )?;
    c.eq(
        all_activity(c, repo, "c1").await?,
        vec![],
        "c1's activity (the workflow appends it, in the store)",
    )?;
    let holders = c.ok(
        repo.email_holders(&["a@example.org".into(), "a2@example.org".into()])
            .await,
        "email_holders",
    )?;
    c.eq(
        holders
            .iter()
            .map(|h| (h.key.as_str(), h.owner.as_str()))
            .collect::<Vec<_>>(),
        vec![("a2@example.org", "a")],
        "email_holders after the edit",
    )?;
    // Swapping two addresses in one edit is not a conflict.
    let swap = [
        edit("a", Some("d@example.org")),
        edit("d", Some("a2@example.org")),
    ];
    c.ok(repo.update_emails(&swap).await, "update_emails (swap)")?;
    c.eq(
        get_owner(c, repo, "d").await?.primary_email.as_deref(),
        Some("a2@example.org"),
        "d after the swap",
    )
}

/// `update_emails` with an unknown owner: `NotFound`, and nothing changes.
pub async fn update_emails_not_found_changes_nothing(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("update_emails_not_found_changes_nothing");
    c.ok(
        repo.upsert_owners(&[owner("a", "c1", Some("a@example.org"))], t(0))
            .await,
        "upsert_owners",
    )?;
    c.ok(
        repo.issue_token(&token(1, "a", "b1", t(1), t(1000))).await,
        "issue_token",
    )?;
    let edits = [
        edit("a", Some("x@example.org")),
        edit("ghost", Some("y@example.org")),
    ];
    c.err(
        repo.update_emails(&edits).await,
        "NotFound",
        is_not_found,
        "update_emails with an unknown owner",
    )?;
    c.eq(
        get_owner(c, repo, "a").await?.primary_email.as_deref(),
        Some("a@example.org"),
        "a's address after the failed edit",
    )?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Live,
        "a's token",
    )?;
    c.eq(all_activity(c, repo, "c1").await?, vec![], "activity")
}

/// `update_emails` is compare-and-set on uniqueness: an address held outside the
/// edit (in any spelling of its mailbox), or given to two edited owners, fails with `Precondition` and changes
/// nothing; addresses shared among unedited owners do not matter; two concurrent
/// edits taking one address: exactly one wins.
pub async fn update_emails_uniqueness(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("update_emails_uniqueness");
    let owners = vec![
        owner("a", "c1", Some("a@example.org")),
        owner("b", "c2", Some("b@example.org")),
        owner("s1", "c1", Some("shared@example.org")),
        owner("s2", "c1", Some("Shared@example.org")),
        owner("e", "c1", None),
    ];
    c.ok(repo.upsert_owners(&owners, t(0)).await, "upsert_owners")?;
    c.ok(
        repo.issue_token(&token(1, "a", "b1", t(1), t(1000))).await,
        "issue_token",
    )?;
    let unchanged = |what: &'static str| async move {
        c.eq(
            get_owner(c, repo, "a").await?.primary_email.as_deref(),
            Some("a@example.org"),
            what,
        )?;
        c.eq(get_owner(c, repo, "e").await?.primary_email, None, what)?;
        c.eq(token_state(c, repo, 1).await?, TokenState::Live, what)?;
        c.eq(all_activity(c, repo, "c1").await?, vec![], what)
    };
    c.err(
        repo.update_emails(&[edit("a", Some(" B@EXAMPLE.org "))])
            .await,
        "Precondition",
        is_precondition,
        "taking an address held by an owner of another community",
    )?;
    unchanged("after taking a held address").await?;
    for spelling in [
        "b@ｅｘａｍｐｌｅ.org",
        "\"b\"@example.org",
        "b@exam\u{AD}ple.org",
    ] {
        c.err(
            repo.update_emails(&[edit("a", Some(spelling))]).await,
            "Precondition",
            is_precondition,
            "taking another spelling of an address held by another owner",
        )?;
        unchanged("after taking another spelling of a held address").await?;
    }
    c.err(
        repo.update_emails(&[
            edit("e", Some("new@bücher.example")),
            edit("a", Some("NEW@xn--bcher-kva.example")),
        ])
        .await,
        "Precondition",
        is_precondition,
        "giving one address to two edited owners",
    )?;
    unchanged("after giving one address to two owners").await?;
    c.err(
        repo.update_emails(&[edit("e", Some("shared@example.org"))])
            .await,
        "Precondition",
        is_precondition,
        "taking an address shared by two unedited owners",
    )?;
    unchanged("after taking a shared address").await?;
    c.ok(
        repo.update_emails(&[edit("e", Some("e@example.org"))])
            .await,
        "an edit while other owners share an address",
    )?;
    // Concurrent edits racing for one address.
    for i in 0..20 {
        let (p, q) = (format!("p{i}"), format!("q{i}"));
        c.ok(
            repo.upsert_owners(&[owner(&p, "c1", None), owner(&q, "c1", None)], t(0))
                .await,
            "upsert_owners",
        )?;
        let address = format!("race{i}@example.org");
        let edit_p = [edit(&p, Some(&address))];
        let edit_q = [edit(&q, Some(&address))];
        let (rp, rq) = futures::join!(repo.update_emails(&edit_p), repo.update_emails(&edit_q),);
        let wins = [&rp, &rq].iter().filter(|r| r.is_ok()).count();
        c.ensure(wins == 1, || {
            format!("two edits raced for `{address}`: {wins} succeeded ({rp:?}, {rq:?})")
        })?;
        for r in [rp, rq] {
            if let Err(e) = r {
                c.ensure(is_precondition(&e), || {
                    format!("the losing edit must fail with Precondition, got {e}")
                })?;
            }
        }
        let holders = c.ok(
            repo.email_holders(std::slice::from_ref(&address)).await,
            "email_holders",
        )?;
        c.eq(holders.len(), 1, "holders of a raced address")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Drafts.

/// Drafts: round trip with attachment bytes, replace, newest first per community,
/// delete says whether it existed.
pub async fn drafts_round_trip(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("drafts_round_trip");
    let draft = |id: &str, community: &str, updated: i64| Draft {
        id: DraftId::new(id).expect("fixture id"),
        invite: Invite {
            draft: Some(DraftId::new(id).expect("fixture id")),
            ..invite(community)
        },
        created_at: t(0),
        updated_at: t(updated),
    };
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.extend_from_slice(b"\r\n.\r\n\xff\xfe\x00");
    let mut d1 = draft("d1", "c1", 0);
    d1.invite
        .attachments
        .push(Attachment::new("welcome.pdf", "application/pdf", bytes));
    d1.invite
        .attachments
        .push(Attachment::new("empty.txt", "text/plain", Vec::new()));
    // HTML only: the text part is made from it. A store must keep "no text body"
    // apart from an empty one, and an HTML body as written.
    let mut d2 = draft("d2", "c1", 10);
    d2.invite.text_body = None;
    d2.invite.html_body = Some(
        "<p>Hello {{owner.first_name}} <a href=\"{{registration_url}}\">register</a></p>".into(),
    );
    let mut d3 = draft("d3", "c1", 5);
    d3.invite.text_body = Some(String::new());
    let d4 = draft("d4", "c2", 50);
    for d in [&d1, &d2, &d3, &d4] {
        c.ok(repo.save_draft(d).await, "save_draft")?;
    }
    c.eq(
        c.ok(repo.draft(&d1.id).await, "draft")?,
        Some(d1.clone()),
        "draft with attachments",
    )?;
    c.eq(
        c.ok(repo.draft(&d2.id).await, "draft")?,
        Some(d2.clone()),
        "draft with an HTML body only",
    )?;
    c.eq(
        c.ok(repo.draft(&d3.id).await, "draft")?,
        Some(d3.clone()),
        "draft with an empty text body",
    )?;
    let order = |drafts: Vec<Draft>| {
        drafts
            .into_iter()
            .map(|d| d.id.to_string())
            .collect::<Vec<_>>()
    };
    c.eq(
        order(c.ok(repo.drafts(&cid("c1")).await, "drafts")?),
        vec!["d2".to_owned(), "d3".into(), "d1".into()],
        "drafts newest first",
    )?;
    let mut d1b = d1.clone();
    d1b.updated_at = t(20);
    d1b.invite.subject = "Updated subject".into();
    c.ok(repo.save_draft(&d1b).await, "save_draft (replace)")?;
    c.eq(
        c.ok(repo.draft(&d1.id).await, "draft")?,
        Some(d1b),
        "replaced draft",
    )?;
    c.eq(
        order(c.ok(repo.drafts(&cid("c1")).await, "drafts")?),
        vec!["d1".to_owned(), "d2".into(), "d3".into()],
        "drafts after d1 was saved again",
    )?;
    c.eq(
        c.ok(repo.delete_draft(&d1.id).await, "delete_draft")?,
        true,
        "deleting d1",
    )?;
    c.eq(
        c.ok(repo.delete_draft(&d1.id).await, "delete_draft")?,
        false,
        "deleting d1 again",
    )?;
    c.eq(
        c.ok(repo.draft(&d1.id).await, "draft")?,
        None,
        "deleted draft",
    )?;
    c.eq(
        order(c.ok(repo.drafts(&cid("c1")).await, "drafts")?),
        vec!["d2".to_owned(), "d3".into()],
        "drafts after delete",
    )?;
    c.eq(
        order(c.ok(repo.drafts(&cid("c2")).await, "drafts")?),
        vec!["d4".to_owned()],
        "drafts of c2",
    )
}

// ---------------------------------------------------------------------------------
// Batches and deliveries.

/// `create_batch` stores the batch, its activity entry and every delivery as
/// pending, ids and addresses byte for byte (quotes, backslashes and non-ASCII
/// included); `deliveries` are ordered by owner id; `batches` newest first.
pub async fn create_batch_stores_everything(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("create_batch_stores_everything");
    let mut b1 = new_batch("b1", "c1", &["o3", "o1", "o2"], t(0));
    let odd = (oid(r#"o4 "Zoë" \ 'x'"#), addr("o'brien+hoa@example.org"));
    b1.deliveries.push(odd.clone());
    c.ok(repo.create_batch(&b1).await, "create_batch")?;
    c.eq(
        c.ok(repo.batch(&bid("b1")).await, "batch")?,
        Some(b1.batch.clone()),
        "stored batch",
    )?;
    let deliveries = c.ok(repo.deliveries(&bid("b1")).await, "deliveries")?;
    let want: Vec<Delivery> = ["o1", "o2", "o3"]
        .iter()
        .map(|o| (oid(o), addr(&format!("{o}@example.org"))))
        .chain([odd])
        .map(|(owner, to)| Delivery {
            batch: bid("b1"),
            owner,
            to,
            state: DeliveryState::Pending,
            attempts: 0,
            unreachable_runs: 0,
        })
        .collect();
    c.eq(deliveries, want, "deliveries")?;
    c.eq(
        c.ok(repo.delivery_counts(&bid("b1")).await, "delivery_counts")?,
        DeliveryCounts {
            pending: 4,
            ..DeliveryCounts::default()
        },
        "counts",
    )?;
    c.eq(
        all_activity(c, repo, "c1").await?,
        vec![b1.activity.clone()],
        "activity",
    )?;
    c.ok(
        repo.create_batch(&new_batch("b2", "c1", &["o1"], t(10)))
            .await,
        "create_batch",
    )?;
    c.ok(
        repo.create_batch(&new_batch("b0", "c1", &["o1"], t(-10)))
            .await,
        "create_batch",
    )?;
    let order: Vec<String> = c
        .ok(repo.batches(&cid("c1")).await, "batches")?
        .into_iter()
        .map(|b| b.id.to_string())
        .collect();
    c.eq(
        order,
        vec!["b2".to_owned(), "b1".into(), "b0".into()],
        "batches newest first",
    )?;
    c.eq(
        c.ok(repo.batches(&cid("c2")).await, "batches")?,
        vec![],
        "batches of c2",
    )?;
    c.eq(
        c.ok(repo.batch(&bid("zz")).await, "batch")?,
        None,
        "missing batch",
    )
}

/// `create_batch` is all or nothing: a repeated owner fails with `Precondition` and
/// leaves no batch, no deliveries and no activity entry (the same batch can then be
/// created without the repeat).
pub async fn create_batch_is_all_or_nothing(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("create_batch_is_all_or_nothing");
    let bad = new_batch("b1", "c1", &["o1", "o2", "o3", "o2", "o4"], t(0));
    c.err(
        repo.create_batch(&bad).await,
        "Precondition",
        is_precondition,
        "create_batch with a repeated owner",
    )?;
    c.eq(
        c.ok(repo.batch(&bid("b1")).await, "batch")?,
        None,
        "batch after the failure",
    )?;
    c.eq(
        c.ok(repo.batches(&cid("c1")).await, "batches")?,
        vec![],
        "batches after the failure",
    )?;
    if let Ok(d) = repo.deliveries(&bid("b1")).await {
        c.eq(d, vec![], "deliveries after the failure")?;
    }
    if let Ok(counts) = repo.delivery_counts(&bid("b1")).await {
        c.eq(counts.total(), 0, "delivery count after the failure")?;
    }
    c.eq(
        all_activity(c, repo, "c1").await?,
        vec![],
        "activity after the failure",
    )?;
    let good = new_batch("b1", "c1", &["o1", "o2", "o3", "o4"], t(0));
    c.ok(
        repo.create_batch(&good).await,
        "create_batch after the failed one",
    )?;
    c.eq(
        c.ok(repo.deliveries(&bid("b1")).await, "deliveries")?.len(),
        4,
        "deliveries",
    )
}

/// `create_batch` with a taken id: `AlreadyExists`, and nothing changes.
pub async fn create_batch_duplicate_id(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("create_batch_duplicate_id");
    let first = new_batch("b1", "c1", &["o1", "o2"], t(0));
    c.ok(repo.create_batch(&first).await, "create_batch")?;
    let claimed = c.ok(
        repo.claim_deliveries(&bid("b1"), &sid("a"), 1, LEASE, t(1))
            .await,
        "claim",
    )?;
    let before = c.ok(repo.deliveries(&bid("b1")).await, "deliveries")?;
    let mut again = new_batch("b1", "c1", &["o3"], t(5));
    again.batch.portal_url = "https://elsewhere.example.org".into();
    c.err(
        repo.create_batch(&again).await,
        "AlreadyExists",
        is_already_exists,
        "create_batch with a taken id",
    )?;
    c.eq(
        c.ok(repo.batch(&bid("b1")).await, "batch")?,
        Some(first.batch),
        "batch",
    )?;
    c.eq(
        c.ok(repo.deliveries(&bid("b1")).await, "deliveries")?,
        before,
        "deliveries",
    )?;
    c.eq(claimed.len(), 1, "claimed before")?;
    c.eq(
        all_activity(c, repo, "c1").await?,
        vec![first.activity],
        "activity",
    )
}

/// `claim_deliveries`: respects the limit; pending deliveries first, by owner id;
/// each claimed by the caller at `now` until `now + lease`; a lease that still runs
/// is never taken, not by another sender nor by its holder; one that has run out
/// (`until` at or before `now`) is taken over; settled deliveries never; `NotFound`
/// for a missing batch.
pub async fn claim_deliveries_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("claim_deliveries_rules");
    let (a, b) = (sid("sender-a"), sid("sender-b"));
    c.err(
        repo.claim_deliveries(&bid("zz"), &a, 5, LEASE, t(0)).await,
        "NotFound",
        is_not_found,
        "claiming from a missing batch",
    )?;
    let owners = ["o4", "o2", "o5", "o1", "o3"];
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &owners, t(0)))
            .await,
        "create_batch",
    )?;
    let first = c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 2, LEASE, t(10)).await,
        "claim",
    )?;
    c.eq(
        sorted_owners(&first),
        vec!["o1", "o2"],
        "limit 2: the first pending by owner id",
    )?;
    for d in &first {
        let want = claimed_state(t(10), &a, t(40));
        c.eq(&d.state, &want, "returned state")?;
        c.eq(
            delivery(c, repo, "b1", d.owner.as_str()).await?.state,
            want,
            "stored state",
        )?;
    }
    let second = c.ok(
        repo.claim_deliveries(&bid("b1"), &b, 10, LEASE, t(11))
            .await,
        "claim",
    )?;
    c.eq(sorted_owners(&second), vec!["o3", "o4", "o5"], "the rest")?;
    for (sender, name) in [(&a, "its holder"), (&b, "another sender")] {
        let none = c.ok(
            repo.claim_deliveries(&bid("b1"), sender, 10, LEASE, t(39))
                .await,
            "claim",
        )?;
        c.eq(
            sorted_owners(&none),
            Vec::<&str>::new(),
            &format!("leases that still run are not taken by {name}"),
        )?;
    }
    let taken = c.ok(
        repo.claim_deliveries(&bid("b1"), &b, 10, LEASE, t(40))
            .await,
        "claim",
    )?;
    c.eq(
        sorted_owners(&taken),
        vec!["o1", "o2"],
        "leases that ran out at `now` are taken over",
    )?;
    for d in &taken {
        c.eq(
            &d.state,
            &claimed_state(t(40), &b, t(70)),
            "taken-over state",
        )?;
    }
    c.eq(
        c.ok(
            repo.record_deliveries(&bid("b1"), &b, &[(oid("o3"), sent(t(5000), 1))], t(41))
                .await,
            "record_deliveries",
        )?,
        vec![],
        "refused",
    )?;
    let rest = c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 10, LEASE, t(200))
            .await,
        "claim",
    )?;
    c.eq(
        sorted_owners(&rest),
        vec!["o1", "o2", "o4", "o5"],
        "every lease ran out; the sent delivery is not claimable",
    )?;
    // Pending deliveries come before run-out leases.
    c.ok(
        repo.create_batch(&new_batch("b2", "c1", &["p1", "p2", "p3"], t(0)))
            .await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b2"), &a, 1, LEASE, t(0)).await,
        "claim",
    )?;
    let pending_first = c.ok(
        repo.claim_deliveries(&bid("b2"), &b, 2, LEASE, t(100))
            .await,
        "claim",
    )?;
    c.eq(
        sorted_owners(&pending_first),
        vec!["p2", "p3"],
        "pending deliveries before a run-out lease",
    )?;
    check_counts(c, repo, "b1").await?;
    check_counts(c, repo, "b2").await
}

/// `claim_deliveries` under contention: many concurrent claimers on one batch of
/// 500 deliveries get disjoint sets that together cover the batch.
pub async fn claim_deliveries_concurrently(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("claim_deliveries_concurrently");
    let names: Vec<String> = (0..500).map(|i| format!("o{i:04}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &refs, t(0))).await,
        "create_batch",
    )?;
    let claimers = (0..25).map(|i| async move {
        let sender = sid(&format!("claimer-{i}"));
        let mut mine = Vec::new();
        loop {
            let got = repo
                .claim_deliveries(&bid("b1"), &sender, 7, LEASE, t(10))
                .await?;
            if got.is_empty() {
                return Ok::<_, RepositoryError>(mine);
            }
            mine.extend(got.into_iter().map(|d| d.owner));
            tokio::task::yield_now().await;
        }
    });
    let mut seen: BTreeMap<OwnerId, usize> = BTreeMap::new();
    for result in join_all(claimers).await {
        for owner in c.ok(result, "claim_deliveries")? {
            *seen.entry(owner).or_default() += 1;
        }
    }
    let twice: Vec<&OwnerId> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(o, _)| o)
        .collect();
    c.ensure(twice.is_empty(), || {
        format!(
            "{} deliveries were handed to more than one claimer, e.g. {:?}",
            twice.len(),
            twice.first()
        )
    })?;
    c.eq(seen.len(), 500, "deliveries claimed in all")?;
    c.eq(
        c.ok(repo.delivery_counts(&bid("b1")).await, "delivery_counts")?,
        DeliveryCounts {
            claimed: 500,
            ..DeliveryCounts::default()
        },
        "counts",
    )
}

/// `renew_claims`: extends only the caller's own leases (by `now + lease`, keeping
/// `at`), so a claim at their old end does not take them; refuses and leaves
/// unchanged what the caller does not hold (another sender's, pending, sent,
/// unknown); renews a lease that ran out as long as nobody took it; `NotFound` for a
/// missing batch.
pub async fn renew_claims_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("renew_claims_rules");
    let (a, b) = (sid("sender-a"), sid("sender-b"));
    c.err(
        repo.renew_claims(&bid("zz"), &a, &[oid("o1")], LEASE, t(0))
            .await,
        "NotFound",
        is_not_found,
        "renewing in a missing batch",
    )?;
    c.ok(
        repo.create_batch(&new_batch(
            "b1",
            "c1",
            &["o1", "o2", "o3", "o4", "o5"],
            t(0),
        ))
        .await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 3, LEASE, t(0)).await,
        "claim",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &b, 1, LEASE, t(0)).await,
        "claim",
    )?;
    let refused = c.ok(
        repo.renew_claims(
            &bid("b1"),
            &a,
            &[oid("o1"), oid("o2"), oid("o4"), oid("o5"), oid("ghost")],
            LEASE,
            t(20),
        )
        .await,
        "renew_claims",
    )?;
    c.eq(
        sorted(refused),
        names(&["ghost", "o4", "o5"]),
        "refused: another sender's, a pending one, an unknown one",
    )?;
    for o in ["o1", "o2"] {
        c.eq(
            delivery(c, repo, "b1", o).await?.state,
            claimed_state(t(0), &a, t(50)),
            "a renewed lease",
        )?;
    }
    c.eq(
        delivery(c, repo, "b1", "o3").await?.state,
        claimed_state(t(0), &a, t(30)),
        "an unlisted lease",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o4").await?.state,
        claimed_state(t(0), &b, t(30)),
        "another sender's lease, after a refused renewal",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o5").await?.state,
        DeliveryState::Pending,
        "a pending delivery, after a refused renewal",
    )?;
    let at_old_end = c.ok(
        repo.claim_deliveries(&bid("b1"), &b, 10, LEASE, t(30))
            .await,
        "claim",
    )?;
    c.eq(
        sorted_owners(&at_old_end),
        vec!["o3", "o4", "o5"],
        "at the old end, the leases not renewed (and the pending one) are taken",
    )?;
    // o1 and o2 have run out at t(60) but nobody took them: still a's to renew.
    c.eq(
        c.ok(
            repo.renew_claims(&bid("b1"), &a, &[oid("o1")], LEASE, t(60))
                .await,
            "renew_claims",
        )?,
        vec![],
        "refused: a run-out lease nobody took",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o1").await?.state,
        claimed_state(t(0), &a, t(90)),
        "a run-out lease renewed",
    )?;
    let later = c.ok(
        repo.claim_deliveries(&bid("b1"), &b, 10, LEASE, t(60))
            .await,
        "claim",
    )?;
    c.eq(
        sorted_owners(&later),
        vec!["o2", "o3", "o4", "o5"],
        "every lease but the renewed one has run out",
    )?;
    c.eq(
        sorted(
            c.ok(
                repo.renew_claims(&bid("b1"), &a, &[oid("o1"), oid("o2")], LEASE, t(61))
                    .await,
                "renew_claims",
            )?,
        ),
        names(&["o2"]),
        "refused: a lease taken over",
    )?;
    c.ok(
        repo.record_deliveries(&bid("b1"), &a, &[(oid("o1"), sent(t(5000), 1))], t(62))
            .await,
        "record_deliveries",
    )?;
    c.eq(
        sorted(
            c.ok(
                repo.renew_claims(&bid("b1"), &a, &[oid("o1")], LEASE, t(63))
                    .await,
                "renew_claims",
            )?,
        ),
        names(&["o1"]),
        "refused: a sent delivery",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o1").await?.state,
        DeliveryState::Sent { at: t(62) },
        "a sent delivery, after a refused renewal",
    )?;
    check_counts(c, repo, "b1").await
}

/// Fencing: once another sender took a delivery over, the former holder's outcome,
/// renewal and release are refused and change nothing (the delivery stays the new
/// holder's, its owner's access untouched), while the rest of the same group is
/// recorded; the new holder's outcome counts once, and nobody's later write
/// overwrites it. A single `record_delivery` refusal is `NotHolder`.
pub async fn stale_holder_writes_are_refused(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("stale_holder_writes_are_refused");
    let (a, b) = (sid("sender-a"), sid("sender-b"));
    let before = vec![
        owner("o1", "c1", Some("o1@example.org")),
        owner("o2", "c1", Some("o2@example.org")),
        owner("o3", "c1", Some("o3@example.org")),
    ];
    c.ok(repo.upsert_owners(&before, t(0)).await, "upsert_owners")?;
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &["o1", "o2", "o3"], t(0)))
            .await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 3, LEASE, t(0)).await,
        "claim",
    )?;
    let taken = c.ok(
        repo.claim_deliveries(&bid("b1"), &b, 2, LEASE, t(30)).await,
        "claim",
    )?;
    c.eq(sorted_owners(&taken), vec!["o1", "o2"], "taken over")?;
    // a wakes up: one of its outcomes is refused, the other (o3: its lease ran out
    // but nobody took it) counts.
    let refused = c.ok(
        repo.record_deliveries(
            &bid("b1"),
            &a,
            &[
                (oid("o1"), sent(t(1000), 1)),
                (oid("o3"), failed("550 no such user", 1)),
            ],
            t(31),
        )
        .await,
        "record_deliveries",
    )?;
    c.eq(sorted(refused), names(&["o1"]), "refused outcomes")?;
    let o1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (o1.state, o1.attempts),
        (claimed_state(t(30), &b, t(60)), 0),
        "a refused outcome changes nothing",
    )?;
    c.eq(
        get_owner(c, repo, "o1").await?,
        before[0].clone(),
        "a refused Sent leaves the owner's access",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o3").await?.state,
        DeliveryState::Failed {
            at: t(31),
            error: "550 no such user".into(),
        },
        "the rest of the group is recorded",
    )?;
    c.err(
        repo.record_delivery(&bid("b1"), &a, &oid("o2"), &sent(t(1000), 1), t(31))
            .await,
        "NotHolder",
        is_not_holder,
        "record_delivery from a former holder",
    )?;
    c.eq(
        sorted(c.ok(
            repo.release_deliveries(&bid("b1"), &a, &[oid("o2")]).await,
            "release_deliveries",
        )?),
        names(&["o2"]),
        "a release from a former holder is refused",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o2").await?.state,
        claimed_state(t(30), &b, t(60)),
        "after the refused writes",
    )?;
    c.eq(
        c.ok(
            repo.record_deliveries(&bid("b1"), &b, &[(oid("o1"), sent(t(1000), 2))], t(32))
                .await,
            "record_deliveries",
        )?,
        vec![],
        "the new holder's outcome is refused",
    )?;
    for (sender, name) in [(&a, "the former holder"), (&b, "the holder, again")] {
        c.eq(
            sorted(
                c.ok(
                    repo.record_deliveries(
                        &bid("b1"),
                        sender,
                        &[(oid("o1"), failed("late", 1))],
                        t(33),
                    )
                    .await,
                    "record_deliveries",
                )?,
            ),
            names(&["o1"]),
            &format!("a later outcome from {name} is refused"),
        )?;
    }
    let o1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (o1.state, o1.attempts),
        (DeliveryState::Sent { at: t(32) }, 2),
        "the outcome counted once",
    )?;
    c.eq(
        invitation_state(c, repo, "o1").await?,
        Some(InvitationState::after(None, t(32), t(1000))),
        "o1's invitation state",
    )?;
    check_counts(c, repo, "b1").await
}

/// `held_claims` names every holder with its number of deliveries and the first
/// and last end of its leases, and the clock's `now`; `revoke_claims` ends every claim
/// at once (the deliveries are pending, the former holders' writes refused).
pub async fn held_claims_and_revoke(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("held_claims_and_revoke");
    let (a, b) = (sid("sender-a"), sid("sender-b"));
    for (what, missing) in [
        (
            "held_claims",
            repo.held_claims(&bid("zz"), t(0)).await.map(|_| ()),
        ),
        (
            "revoke_claims",
            repo.revoke_claims(&bid("zz")).await.map(|_| ()),
        ),
    ] {
        c.err(
            missing,
            "NotFound",
            is_not_found,
            &format!("{what} of a missing batch"),
        )?;
    }
    c.ok(
        repo.create_batch(&new_batch(
            "b1",
            "c1",
            &["o1", "o2", "o3", "o4", "o5"],
            t(0),
        ))
        .await,
        "create_batch",
    )?;
    c.eq(
        c.ok(repo.held_claims(&bid("b1"), t(1)).await, "held_claims")?,
        HeldClaims {
            now: t(1),
            holders: vec![],
        },
        "nobody holds anything",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 2, LEASE, t(0)).await,
        "claim",
    )?;
    c.ok(
        repo.renew_claims(&bid("b1"), &a, &[oid("o2")], LEASE, t(10))
            .await,
        "renew_claims",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &b, 1, LEASE, t(5)).await,
        "claim",
    )?;
    let mut held = c.ok(repo.held_claims(&bid("b1"), t(12)).await, "held_claims")?;
    held.holders.sort_by(|x, y| x.sender.cmp(&y.sender));
    c.eq(
        held,
        HeldClaims {
            now: t(12),
            holders: vec![
                ClaimHolder {
                    sender: a.clone(),
                    deliveries: 2,
                    first_until: t(30),
                    last_until: t(40),
                },
                ClaimHolder {
                    sender: b.clone(),
                    deliveries: 1,
                    first_until: t(35),
                    last_until: t(35),
                },
            ],
        },
        "held_claims",
    )?;
    c.eq(
        c.ok(repo.revoke_claims(&bid("b1")).await, "revoke_claims")?,
        3,
        "revoked",
    )?;
    c.eq(
        c.ok(repo.delivery_counts(&bid("b1")).await, "delivery_counts")?,
        DeliveryCounts {
            pending: 5,
            ..DeliveryCounts::default()
        },
        "counts after the revoke",
    )?;
    c.eq(
        c.ok(repo.held_claims(&bid("b1"), t(13)).await, "held_claims")?
            .holders,
        vec![],
        "holders after the revoke",
    )?;
    c.eq(
        sorted(
            c.ok(
                repo.record_deliveries(&bid("b1"), &a, &[(oid("o1"), sent(t(1000), 1))], t(14))
                    .await,
                "record_deliveries",
            )?,
        ),
        names(&["o1"]),
        "a revoked holder's outcome is refused",
    )?;
    c.eq(
        sorted(
            c.ok(
                repo.renew_claims(&bid("b1"), &b, &[oid("o3")], LEASE, t(14))
                    .await,
                "renew_claims",
            )?,
        ),
        names(&["o3"]),
        "a revoked holder's renewal is refused",
    )?;
    c.eq(
        c.ok(repo.revoke_claims(&bid("b1")).await, "revoke_claims")?,
        0,
        "nothing left to revoke",
    )?;
    check_counts(c, repo, "b1").await
}

/// A renewal racing a take-over at the moment a lease runs out: each delivery ends
/// with exactly one of the two senders, the one the repository told (renewed and not
/// refused, or claimed).
pub async fn renewal_races_take_over(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("renewal_races_take_over");
    let (a, b) = (sid("sender-a"), sid("sender-b"));
    let names: Vec<String> = (0..60).map(|i| format!("o{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &refs, t(0))).await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 60, LEASE, t(0)).await,
        "claim",
    )?;
    let owners: Vec<OwnerId> = names.iter().map(|n| oid(n)).collect();
    let renewals = owners.chunks(10).map(|chunk| {
        let a = &a;
        async move {
            tokio::task::yield_now().await;
            let refused = repo
                .renew_claims(&bid("b1"), a, chunk, LEASE, t(30))
                .await?;
            Ok::<_, RepositoryError>(
                chunk
                    .iter()
                    .filter(|o| !refused.contains(o))
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        }
    });
    let take_over = async {
        let mut got = Vec::new();
        loop {
            let claimed = repo
                .claim_deliveries(&bid("b1"), &b, 7, LEASE, t(30))
                .await?;
            if claimed.is_empty() {
                return Ok::<_, RepositoryError>(got);
            }
            got.extend(claimed.into_iter().map(|d| d.owner));
            tokio::task::yield_now().await;
        }
    };
    let (renewed, taken) = futures::join!(join_all(renewals), take_over);
    let mut kept: BTreeSet<OwnerId> = BTreeSet::new();
    for chunk in renewed {
        kept.extend(c.ok(chunk, "renew_claims")?);
    }
    let taken: BTreeSet<OwnerId> = c.ok(taken, "claim_deliveries")?.into_iter().collect();
    let both: Vec<&OwnerId> = kept.intersection(&taken).collect();
    c.ensure(both.is_empty(), || {
        format!(
            "{} deliveries were renewed for the holder and taken over too, e.g. {:?}",
            both.len(),
            both.first()
        )
    })?;
    c.eq(
        kept.len() + taken.len(),
        60,
        "every delivery ends with one sender",
    )?;
    for d in c.ok(repo.deliveries(&bid("b1")).await, "deliveries")? {
        let want = if kept.contains(&d.owner) {
            claimed_state(t(0), &a, t(60))
        } else {
            claimed_state(t(30), &b, t(60))
        };
        c.eq(
            d.state,
            want,
            "the stored lease agrees with what the senders were told",
        )?;
    }
    Ok(())
}

/// `record_delivery`: only from the claim's holder (`NotHolder` otherwise: a pending
/// delivery, a settled one, recording twice; nothing changed), adds attempts, `Sent`
/// moves the owner's invitation state by [`InvitationState::after`], `Failed`
/// leaves it; `requeue_failed` moves failed deliveries back to pending.
pub async fn record_delivery_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("record_delivery_rules");
    let a = sid("sender-a");
    let before = vec![
        owner("o1", "c1", Some("o1@example.org")),
        owner("o2", "c1", Some("o2@example.org")),
        owner("o3", "c1", Some("o3@example.org")),
    ];
    c.ok(repo.upsert_owners(&before, t(0)).await, "upsert_owners")?;
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &["o1", "o2", "o3"], t(0)))
            .await,
        "create_batch",
    )?;
    c.err(
        repo.record_delivery(&bid("b1"), &a, &oid("o1"), &sent(t(1000), 1), t(5))
            .await,
        "NotHolder",
        is_not_holder,
        "recording a pending delivery",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o1").await?.state,
        DeliveryState::Pending,
        "o1 still pending",
    )?;
    c.eq(
        get_owner(c, repo, "o1").await?,
        before[0].clone(),
        "o1 unchanged",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 10, LEASE, t(10))
            .await,
        "claim",
    )?;
    c.ok(
        repo.record_delivery(&bid("b1"), &a, &oid("o1"), &sent(t(1000), 2), t(20))
            .await,
        "record_delivery (sent)",
    )?;
    let d1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (d1.state, d1.attempts),
        (DeliveryState::Sent { at: t(20) }, 2),
        "o1 delivery",
    )?;
    c.eq(
        invitation_state(c, repo, "o1").await?,
        Some(InvitationState::after(None, t(20), t(1000))),
        "o1's invitation state after the send",
    )?;
    c.err(
        repo.record_delivery(&bid("b1"), &a, &oid("o1"), &failed("late", 1), t(21))
            .await,
        "NotHolder",
        is_not_holder,
        "recording a sent delivery again",
    )?;
    let d1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (d1.state, d1.attempts),
        (DeliveryState::Sent { at: t(20) }, 2),
        "o1 after the refused record",
    )?;
    c.ok(
        repo.record_delivery(
            &bid("b1"),
            &a,
            &oid("o2"),
            &failed("550 5.1.1 no such user", 1),
            t(22),
        )
        .await,
        "record_delivery (failed)",
    )?;
    let d2 = delivery(c, repo, "b1", "o2").await?;
    c.eq(
        (d2.state, d2.attempts),
        (
            DeliveryState::Failed {
                at: t(22),
                error: "550 5.1.1 no such user".into(),
            },
            1,
        ),
        "o2 delivery",
    )?;
    c.eq(
        get_owner(c, repo, "o2").await?,
        before[1].clone(),
        "o2 unchanged by a failure",
    )?;
    c.err(
        repo.record_delivery(&bid("b1"), &a, &oid("o2"), &sent(t(1000), 1), t(23))
            .await,
        "NotHolder",
        is_not_holder,
        "recording a failed delivery",
    )?;
    c.ensure(
        repo.record_delivery(&bid("b1"), &a, &oid("ghost"), &sent(t(1000), 1), t(23))
            .await
            .is_err(),
        || "recording a delivery that does not exist must fail".into(),
    )?;
    c.err(
        repo.record_deliveries(&bid("zz"), &a, &[(oid("o3"), sent(t(1000), 1))], t(23))
            .await,
        "NotFound",
        is_not_found,
        "record_deliveries in a missing batch",
    )?;
    check_counts(c, repo, "b1").await?;
    c.err(
        repo.requeue_failed(&bid("zz")).await,
        "NotFound",
        is_not_found,
        "requeue_failed of a missing batch",
    )?;
    c.eq(
        c.ok(repo.requeue_failed(&bid("b1")).await, "requeue_failed")?,
        1,
        "requeued",
    )?;
    c.eq(
        c.ok(repo.requeue_failed(&bid("b1")).await, "requeue_failed")?,
        0,
        "requeued again",
    )?;
    let d2 = delivery(c, repo, "b1", "o2").await?;
    c.eq(
        (d2.state, d2.attempts),
        (DeliveryState::Pending, 1),
        "o2 after requeue",
    )?;
    let again = c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 10, LEASE, t(30))
            .await,
        "claim",
    )?;
    c.eq(
        again.iter().map(|d| d.owner.as_str()).collect::<Vec<_>>(),
        vec!["o2"],
        "claimable after requeue",
    )?;
    c.ok(
        repo.record_delivery(&bid("b1"), &a, &oid("o2"), &sent(t(2000), 2), t(31))
            .await,
        "record_delivery",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o2").await?.attempts,
        3,
        "attempts add up over runs",
    )?;
    c.eq(
        invitation_state(c, repo, "o2").await?,
        Some(InvitationState::after(None, t(31), t(2000))),
        "o2's invitation state",
    )?;
    c.eq(
        c.ok(repo.delivery_counts(&bid("b1")).await, "delivery_counts")?,
        DeliveryCounts {
            claimed: 1,
            sent: 2,
            ..DeliveryCounts::default()
        },
        "counts",
    )?;
    check_counts(c, repo, "b1").await
}

/// An `Unreachable` outcome: fenced like any outcome; the delivery goes back to
/// pending with its attempts added and `unreachable_runs` one more, which a later claim
/// returns and which grows run after run; `requeue_failed` sets it back to 0.
pub async fn unreachable_runs_are_counted(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("unreachable_runs_are_counted");
    let (a, b) = (sid("sender-a"), sid("sender-b"));
    let unreachable = |attempts| DeliveryOutcome::Unreachable { attempts };
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &["o1", "o2"], t(0)))
            .await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 2, LEASE, t(10)).await,
        "claim",
    )?;
    let refused = c.ok(
        repo.record_deliveries(&bid("b1"), &b, &[(oid("o1"), unreachable(3))], t(11))
            .await,
        "record_deliveries by another sender",
    )?;
    c.eq(sorted(refused), names(&["o1"]), "refused: not the holder")?;
    c.eq(
        delivery(c, repo, "b1", "o1").await?.unreachable_runs,
        0,
        "a refused outcome counts nothing",
    )?;
    let refused = c.ok(
        repo.record_deliveries(
            &bid("b1"),
            &a,
            &[(oid("o1"), unreachable(3)), (oid("o2"), sent(t(1000), 1))],
            t(12),
        )
        .await,
        "record_deliveries",
    )?;
    c.eq(sorted(refused), names(&[]), "nothing refused")?;
    let o1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (o1.state, o1.attempts, o1.unreachable_runs),
        (DeliveryState::Pending, 3, 1),
        "pending again, attempts added, one unreachable run",
    )?;
    // A later run claims it with its count, and leaves it pending once more.
    let claimed = c.ok(
        repo.claim_deliveries(&bid("b1"), &b, 2, LEASE, t(20)).await,
        "claim",
    )?;
    c.eq(
        claimed
            .iter()
            .map(|d| (d.owner.to_string(), d.unreachable_runs))
            .collect::<Vec<_>>(),
        vec![("o1".to_owned(), 1)],
        "the claim returns the count",
    )?;
    c.ok(
        repo.record_deliveries(&bid("b1"), &b, &[(oid("o1"), unreachable(2))], t(21))
            .await,
        "record_deliveries",
    )?;
    let o1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (o1.attempts, o1.unreachable_runs),
        (5, 2),
        "the count grows run after run",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 2, LEASE, t(30)).await,
        "claim",
    )?;
    c.ok(
        repo.record_deliveries(
            &bid("b1"),
            &a,
            &[(oid("o1"), failed("no connection", 1))],
            t(31),
        )
        .await,
        "record_deliveries",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o1").await?.unreachable_runs,
        2,
        "a failure keeps the count",
    )?;
    c.eq(
        c.ok(repo.requeue_failed(&bid("b1")).await, "requeue_failed")?,
        1,
        "requeued",
    )?;
    let o1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (o1.state, o1.attempts, o1.unreachable_runs),
        (DeliveryState::Pending, 6, 0),
        "requeue_failed starts the count again and keeps the attempts",
    )?;
    check_counts(c, repo, "b1").await
}

/// `release_deliveries`: the caller's claims become pending; pending, sent, unknown
/// and another sender's are refused and left.
pub async fn release_deliveries_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("release_deliveries_rules");
    let (a, b) = (sid("sender-a"), sid("sender-b"));
    c.err(
        repo.release_deliveries(&bid("zz"), &a, &[oid("o1")]).await,
        "NotFound",
        is_not_found,
        "releasing in a missing batch",
    )?;
    c.ok(
        repo.create_batch(&new_batch(
            "b1",
            "c1",
            &["o1", "o2", "o3", "o4", "o5"],
            t(0),
        ))
        .await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 3, LEASE, t(10)).await,
        "claim",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &b, 1, LEASE, t(10)).await,
        "claim",
    )?;
    c.ok(
        repo.record_delivery(&bid("b1"), &a, &oid("o1"), &sent(t(1000), 1), t(11))
            .await,
        "record_delivery",
    )?;
    let refused = c.ok(
        repo.release_deliveries(
            &bid("b1"),
            &a,
            &[oid("o1"), oid("o2"), oid("o4"), oid("o5"), oid("ghost")],
        )
        .await,
        "release_deliveries",
    )?;
    c.eq(
        sorted(refused),
        names(&["ghost", "o1", "o4", "o5"]),
        "refused: sent, another sender's, pending, unknown",
    )?;
    let state = |o: &'static str| async move { delivery(c, repo, "b1", o).await.map(|d| d.state) };
    c.eq(
        state("o1").await?,
        DeliveryState::Sent { at: t(11) },
        "a sent delivery is left",
    )?;
    c.eq(
        state("o2").await?,
        DeliveryState::Pending,
        "a released delivery",
    )?;
    c.eq(
        state("o3").await?,
        claimed_state(t(10), &a, t(40)),
        "an unlisted claim",
    )?;
    c.eq(
        state("o4").await?,
        claimed_state(t(10), &b, t(40)),
        "another sender's claim",
    )?;
    c.eq(
        state("o5").await?,
        DeliveryState::Pending,
        "a pending delivery",
    )?;
    check_counts(c, repo, "b1").await
}

// ---------------------------------------------------------------------------------
// Tokens.

/// `issue_token`: insert only (`AlreadyExists`, nothing changes); revokes, at the new
/// token's `issued_at`, the owner's live tokens of other batches, not of the same
/// batch, and no other owner's.
pub async fn issue_token_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("issue_token_rules");
    c.eq(
        c.ok(repo.token(&hash(99)).await, "token")?,
        None,
        "unknown token",
    )?;
    let a1 = token(1, "a", "b1", t(0), t(1000));
    c.ok(repo.issue_token(&a1).await, "issue_token")?;
    c.eq(
        c.ok(repo.token(&hash(1)).await, "token")?,
        Some(a1),
        "stored token",
    )?;
    c.ok(
        repo.issue_token(&token(2, "a", "b1", t(5), t(1005))).await,
        "issue_token",
    )?;
    c.ok(
        repo.issue_token(&token(3, "b", "b1", t(5), t(1005))).await,
        "issue_token",
    )?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Live,
        "a's first token after a second of the same batch",
    )?;
    c.ok(
        repo.issue_token(&token(4, "a", "b2", t(10), t(1010))).await,
        "issue_token",
    )?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Revoked { at: t(10) },
        "a's b1 token after a b2 token",
    )?;
    c.eq(
        token_state(c, repo, 2).await?,
        TokenState::Revoked { at: t(10) },
        "a's other b1 token",
    )?;
    c.eq(
        token_state(c, repo, 4).await?,
        TokenState::Live,
        "a's b2 token",
    )?;
    c.eq(
        token_state(c, repo, 3).await?,
        TokenState::Live,
        "b's token",
    )?;
    let clash = token(4, "b", "b3", t(20), t(1020));
    c.err(
        repo.issue_token(&clash).await,
        "AlreadyExists",
        is_already_exists,
        "issuing a taken hash",
    )?;
    c.eq(
        c.ok(repo.token(&hash(4)).await, "token")?,
        Some(token(4, "a", "b2", t(10), t(1010))),
        "the token whose hash was reused",
    )?;
    c.eq(
        token_state(c, repo, 3).await?,
        TokenState::Live,
        "b's token after the refused issue",
    )
}

/// `issue_tokens`: a group ends as the same tokens issued one by one would (same-batch
/// tokens stay live, an older batch's are revoked), and a taken hash is refused.
pub async fn issue_tokens_in_a_group(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("issue_tokens_in_a_group");
    let group = [
        token(1, "a", "b1", t(0), t(1000)),
        token(2, "a", "b1", t(0), t(1000)),
        token(3, "b", "b1", t(0), t(1000)),
    ];
    c.ok(repo.issue_tokens(&group).await, "issue_tokens")?;
    for n in 1..=3 {
        c.eq(
            token_state(c, repo, n).await?,
            TokenState::Live,
            "a token of the group",
        )?;
    }
    c.ok(
        repo.issue_tokens(&[token(4, "a", "b2", t(10), t(1010))])
            .await,
        "issue_tokens",
    )?;
    for n in 1..=2 {
        c.eq(
            token_state(c, repo, n).await?,
            TokenState::Revoked { at: t(10) },
            "a's b1 token after a b2 group",
        )?;
    }
    c.eq(
        token_state(c, repo, 3).await?,
        TokenState::Live,
        "b's token",
    )?;
    c.err(
        repo.issue_tokens(&[token(4, "b", "b3", t(20), t(1020))])
            .await,
        "AlreadyExists",
        is_already_exists,
        "a group with a taken hash",
    )
}

/// Links are pending until their message is accepted (the trait's "Links: pending
/// until accepted"): a pending token revokes nothing and does not redeem; recording
/// its delivery as sent makes it live and revokes the owner's live tokens of other
/// batches, in the same step; a failure, a release, a delivery still claimed and a
/// refused outcome change no token; a delivery sent after being given back makes
/// every pending token of it live (the first copy's link keeps working); of two
/// newer batches, the one recorded last holds the live link.
pub async fn tokens_pending_until_sent(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("tokens_pending_until_sent");
    let s = sid("sender-s");
    let people = ["a", "b", "c", "d"];
    let owners: Vec<Owner> = people
        .iter()
        .map(|o| owner(o, "c1", Some(&format!("{o}@example.org"))))
        .collect();
    c.ok(repo.upsert_owners(&owners, t(0)).await, "upsert_owners")?;
    // Each owner's working link, of an earlier batch.
    for (n, o) in [(1, "a"), (3, "b"), (5, "c"), (8, "d")] {
        c.ok(
            repo.issue_token(&token(n, o, "b0", t(0), t(1000))).await,
            "issue_token (live)",
        )?;
    }
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &people, t(1)))
            .await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &s, 4, LEASE, t(10)).await,
        "claim",
    )?;
    let claimed = [(2, "a"), (4, "b"), (6, "c"), (9, "d")]
        .map(|(n, o)| pending_token(n, o, "b1", t(10), t(1010)));
    c.ok(repo.issue_tokens(&claimed).await, "issue_tokens (pending)")?;
    for (n, want, what) in [
        (
            1,
            TokenState::Live,
            "a's old link while a newer token is pending",
        ),
        (
            3,
            TokenState::Live,
            "b's old link while a newer token is pending",
        ),
        (
            5,
            TokenState::Live,
            "c's old link while a newer token is pending",
        ),
        (
            8,
            TokenState::Live,
            "d's old link while a newer token is pending",
        ),
        (2, TokenState::Pending, "a token issued pending"),
    ] {
        c.eq(token_state(c, repo, n).await?, want, what)?;
    }
    c.eq(
        c.ok(repo.redeem_token(&hash(2), t(11)).await, "redeem_token")?,
        RedeemOutcome::Rejected(TokenRejection::NotSent),
        "redeeming a pending token",
    )?;
    c.eq(
        get_owner(c, repo, "a").await?,
        owners[0].clone(),
        "a after the refused redeem",
    )?;
    // a is sent, b fails, c is given back, d stays claimed.
    c.eq(
        c.ok(
            repo.record_deliveries(
                &bid("b1"),
                &s,
                &[
                    (oid("a"), sent(t(1010), 1)),
                    (oid("b"), failed("550 no such user", 1)),
                ],
                t(20),
            )
            .await,
            "record_deliveries",
        )?,
        vec![],
        "refused",
    )?;
    c.eq(
        c.ok(
            repo.release_deliveries(&bid("b1"), &s, &[oid("c")]).await,
            "release_deliveries",
        )?,
        vec![],
        "refused releases",
    )?;
    for (n, want, what) in [
        (
            2,
            TokenState::Live,
            "a's token once its message is recorded sent",
        ),
        (
            1,
            TokenState::Revoked { at: t(20) },
            "a's old link, superseded when the newer message was recorded",
        ),
        (
            4,
            TokenState::Pending,
            "b's token after its delivery failed",
        ),
        (
            3,
            TokenState::Live,
            "b's old link after the newer message failed",
        ),
        (
            6,
            TokenState::Pending,
            "c's token after its delivery was given back",
        ),
        (
            5,
            TokenState::Live,
            "c's old link after its delivery was given back",
        ),
        (
            9,
            TokenState::Pending,
            "d's token while its delivery is claimed",
        ),
        (
            8,
            TokenState::Live,
            "d's old link while its delivery is claimed",
        ),
    ] {
        c.eq(token_state(c, repo, n).await?, want, what)?;
    }
    // c is sent on a second claim, with a fresh token: both of the batch's tokens
    // work (the first message may have gone out before it was given back).
    c.ok(
        repo.claim_deliveries(&bid("b1"), &s, 4, LEASE, t(30)).await,
        "claim again",
    )?;
    c.ok(
        repo.issue_tokens(&[pending_token(7, "c", "b1", t(30), t(1030))])
            .await,
        "issue_tokens (pending)",
    )?;
    c.ok(
        repo.record_deliveries(&bid("b1"), &s, &[(oid("c"), sent(t(1030), 1))], t(35))
            .await,
        "record_deliveries",
    )?;
    for (n, want, what) in [
        (
            6,
            TokenState::Live,
            "c's token of the first claim, once sent",
        ),
        (
            7,
            TokenState::Live,
            "c's token of the second claim, once sent",
        ),
        (5, TokenState::Revoked { at: t(35) }, "c's old link"),
    ] {
        c.eq(token_state(c, repo, n).await?, want, what)?;
    }
    // A refused outcome (from a sender that does not hold d's claim) changes no token.
    c.eq(
        c.ok(
            repo.record_deliveries(
                &bid("b1"),
                &sid("sender-x"),
                &[(oid("d"), sent(t(1010), 1))],
                t(36),
            )
            .await,
            "record_deliveries (not the holder)",
        )?,
        vec![oid("d")],
        "refused",
    )?;
    c.eq(
        token_state(c, repo, 9).await?,
        TokenState::Pending,
        "d's token after a refused outcome",
    )?;
    c.eq(
        token_state(c, repo, 8).await?,
        TokenState::Live,
        "d's old link after a refused outcome",
    )?;
    // Two newer batches to a: the one recorded last holds the live link.
    for (b, at) in [("b2", t(40)), ("b3", t(41))] {
        c.ok(
            repo.create_batch(&new_batch(b, "c1", &["a"], at)).await,
            "create_batch",
        )?;
        c.ok(
            repo.claim_deliveries(&bid(b), &s, 1, LEASE, at).await,
            "claim",
        )?;
    }
    c.ok(
        repo.issue_tokens(&[
            pending_token(10, "a", "b2", t(40), t(1040)),
            pending_token(11, "a", "b3", t(41), t(1041)),
        ])
        .await,
        "issue_tokens (pending)",
    )?;
    c.ok(
        repo.record_deliveries(&bid("b3"), &s, &[(oid("a"), sent(t(1041), 1))], t(50))
            .await,
        "record_deliveries (b3)",
    )?;
    for (n, want, what) in [
        (11, TokenState::Live, "a's b3 token, recorded first"),
        (2, TokenState::Revoked { at: t(50) }, "a's b1 token"),
        (10, TokenState::Pending, "a's b2 token, not recorded yet"),
    ] {
        c.eq(token_state(c, repo, n).await?, want, what)?;
    }
    c.ok(
        repo.record_deliveries(&bid("b2"), &s, &[(oid("a"), sent(t(1040), 1))], t(60))
            .await,
        "record_deliveries (b2)",
    )?;
    for (n, want, what) in [
        (10, TokenState::Live, "a's b2 token, recorded last"),
        (11, TokenState::Revoked { at: t(60) }, "a's b3 token"),
    ] {
        c.eq(token_state(c, repo, n).await?, want, what)?;
    }
    let redeemed = c.ok(repo.redeem_token(&hash(10), t(61)).await, "redeem_token")?;
    c.ensure(matches!(redeemed, RedeemOutcome::Redeemed { .. }), || {
        format!("a's live link must redeem: {redeemed:?}")
    })?;
    check_counts(c, repo, "b1").await
}

/// `record_deliveries` of a skip: the delivery is `Skipped` with its reason, settled
/// (not failed, not claimable, not requeued by `requeue_failed`), with no attempt
/// added, and neither the owner's access nor any token changes.
pub async fn skipped_deliveries_are_settled(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("skipped_deliveries_are_settled");
    let a = sid("sender-a");
    let before = vec![
        owner("o1", "c1", Some("o1@example.org")),
        owner("o2", "c1", Some("o2@example.org")),
        owner("o3", "c1", Some("o3@example.org")),
    ];
    c.ok(repo.upsert_owners(&before, t(0)).await, "upsert_owners")?;
    c.ok(
        repo.create_batch(&new_batch("b0", "c1", &["o1"], t(0)))
            .await,
        "create_batch b0",
    )?;
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &["o1", "o2", "o3"], t(1)))
            .await,
        "create_batch b1",
    )?;
    // o1 holds a live link of an earlier batch and a pending one of this batch.
    c.ok(
        repo.issue_token(&token(1, "o1", "b0", t(0), t(5000))).await,
        "issue_token live",
    )?;
    c.ok(
        repo.issue_token(&pending_token(2, "o1", "b1", t(10), t(5000)))
            .await,
        "issue_token pending",
    )?;
    let o1_before = get_owner(c, repo, "o1").await?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 3, LEASE, t(10)).await,
        "claim",
    )?;
    let group = vec![
        (
            oid("o1"),
            DeliveryOutcome::Skipped {
                reason: SkipReason::Moved,
            },
        ),
        (oid("o3"), sent(t(1000), 1)),
        (
            oid("o2"),
            DeliveryOutcome::Skipped {
                reason: SkipReason::EmailChanged,
            },
        ),
    ];
    c.eq(
        c.ok(
            repo.record_deliveries(&bid("b1"), &a, &group, t(20)).await,
            "record_deliveries",
        )?,
        Vec::new(),
        "refused",
    )?;
    let o1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (o1.state, o1.attempts),
        (
            DeliveryState::Skipped {
                at: t(20),
                reason: SkipReason::Moved,
            },
            0,
        ),
        "the skipped delivery, with its reason and no attempt",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o2").await?.state,
        DeliveryState::Skipped {
            at: t(20),
            reason: SkipReason::EmailChanged,
        },
        "the other skipped delivery",
    )?;
    c.eq(
        get_owner(c, repo, "o1").await?,
        o1_before,
        "a skipped owner's record and access are unchanged",
    )?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Live,
        "a skipped owner's older link keeps working",
    )?;
    c.eq(
        token_state(c, repo, 2).await?,
        TokenState::Pending,
        "a skipped delivery's pending link stays pending",
    )?;
    let counts = c.ok(repo.delivery_counts(&bid("b1")).await, "delivery_counts")?;
    c.eq(
        (counts.sent, counts.failed, counts.skipped, counts.total()),
        (1, 0, 2, 3),
        "counts: skipped are neither sent nor failed",
    )?;
    c.eq(
        sorted_owners(&c.ok(
            repo.skipped_deliveries(&bid("b1")).await,
            "skipped_deliveries",
        )?),
        vec!["o1", "o2"],
        "skipped_deliveries",
    )?;
    c.eq(
        c.ok(repo.requeue_failed(&bid("b1")).await, "requeue_failed")?,
        0,
        "requeue_failed moves no skipped delivery",
    )?;
    c.eq(
        c.ok(
            repo.claim_deliveries(&bid("b1"), &sid("sender-b"), 3, LEASE, t(100))
                .await,
            "claim again",
        )?,
        Vec::new(),
        "a skipped delivery is settled: nobody claims it",
    )?;
    check_counts(c, repo, "b1").await
}

/// `record_deliveries`: a group of outcomes ends as the same outcomes recorded one by
/// one would, and a delivery in the group the caller does not hold (here a pending
/// one) is refused without costing the rest of the group.
pub async fn record_deliveries_in_a_group(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("record_deliveries_in_a_group");
    let a = sid("sender-a");
    let before = vec![
        owner("o1", "c1", Some("o1@example.org")),
        owner("o2", "c1", Some("o2@example.org")),
        owner("o3", "c1", Some("o3@example.org")),
    ];
    c.ok(repo.upsert_owners(&before, t(0)).await, "upsert_owners")?;
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &["o1", "o2", "o3"], t(0)))
            .await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 2, LEASE, t(10)).await,
        "claim",
    )?;
    let group = vec![
        (oid("o1"), sent(t(1000), 1)),
        (oid("o3"), sent(t(1000), 1)),
        (oid("o2"), failed("550 no such user", 1)),
    ];
    c.eq(
        sorted(c.ok(
            repo.record_deliveries(&bid("b1"), &a, &group, t(20)).await,
            "record_deliveries",
        )?),
        names(&["o3"]),
        "refused: the pending delivery",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o1").await?.state,
        DeliveryState::Sent { at: t(20) },
        "the sent one",
    )?;
    c.eq(
        invitation_state(c, repo, "o1").await?,
        Some(InvitationState::after(None, t(20), t(1000))),
        "the sent owner's invitation state",
    )?;
    c.eq(
        delivery(c, repo, "b1", "o2").await?.state,
        DeliveryState::Failed {
            at: t(20),
            error: "550 no such user".into(),
        },
        "the failed one",
    )?;
    let o3 = delivery(c, repo, "b1", "o3").await?;
    c.eq(
        (o3.state, o3.attempts),
        (DeliveryState::Pending, 0),
        "the refused one is unchanged",
    )?;
    c.eq(
        get_owner(c, repo, "o3").await?,
        before[2].clone(),
        "the refused owner is unchanged",
    )?;
    c.eq(
        invitation_state(c, repo, "o3").await?,
        None,
        "the refused owner was not invited",
    )?;
    check_counts(c, repo, "b1").await
}

/// `invitation_states`: an owner's state is [`InvitationState::after`] of each
/// message recorded as sent to them, batch after batch (the first time kept; the
/// last, the count and the expiry from the latest), written by the grouped write
/// itself; failed, skipped, unreachable and refused outcomes change none. Owners never
/// sent to and unknown ids are left out, an owner listed twice comes once, and the
/// directory's registered mark leaves the history as it was.
pub async fn invitation_states_follow_sent_messages(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("invitation_states_follow_sent_messages");
    let (a, b) = (sid("sender-a"), sid("sender-b"));
    let all = ["o1", "o2", "o3", "o4", "o5"];
    let owners: Vec<Owner> = all
        .iter()
        .map(|id| owner(id, "c1", Some(&format!("{id}@example.org"))))
        .collect();
    c.ok(repo.upsert_owners(&owners, t(0)).await, "upsert_owners")?;
    let mut listed: Vec<OwnerId> = all.iter().map(|id| oid(id)).collect();
    listed.extend([oid("o1"), oid("nobody")]);
    let states = |want: Vec<(&'static str, InvitationState)>, what: &'static str| {
        let listed = &listed;
        async move {
            let mut got = c.ok(repo.invitation_states(listed).await, "invitation_states")?;
            got.sort_by(|x, y| x.0.cmp(&y.0));
            let want: Vec<(OwnerId, InvitationState)> =
                want.into_iter().map(|(id, s)| (oid(id), s)).collect();
            c.eq(got, want, what)
        }
    };
    states(Vec::new(), "before any message").await?;
    c.ok(
        repo.create_batch(&new_batch("b1", "c1", &all, t(1))).await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b1"), &a, 10, LEASE, t(10))
            .await,
        "claim",
    )?;
    let group = vec![
        (oid("o1"), sent(t(1000), 1)),
        (oid("o2"), failed("550 no such user", 1)),
        (
            oid("o3"),
            DeliveryOutcome::Skipped {
                reason: SkipReason::Registered,
            },
        ),
        (oid("o4"), DeliveryOutcome::Unreachable { attempts: 1 }),
    ];
    c.eq(
        c.ok(
            repo.record_deliveries(&bid("b1"), &a, &group, t(20)).await,
            "record_deliveries",
        )?,
        Vec::new(),
        "nothing refused",
    )?;
    c.eq(
        sorted(
            c.ok(
                repo.record_deliveries(&bid("b1"), &b, &[(oid("o5"), sent(t(1000), 1))], t(21))
                    .await,
                "record_deliveries",
            )?,
        ),
        names(&["o5"]),
        "a sent outcome from a sender without the claim is refused",
    )?;
    let first = InvitationState::after(None, t(20), t(1000));
    states(vec![("o1", first)], "after the first group").await?;
    c.ok(
        repo.create_batch(&new_batch("b2", "c1", &["o1", "o2"], t(30)))
            .await,
        "create_batch",
    )?;
    c.ok(
        repo.claim_deliveries(&bid("b2"), &a, 10, LEASE, t(40))
            .await,
        "claim",
    )?;
    c.eq(
        c.ok(
            repo.record_deliveries(
                &bid("b2"),
                &a,
                &[(oid("o1"), sent(t(2000), 1)), (oid("o2"), sent(t(3000), 1))],
                t(50),
            )
            .await,
            "record_deliveries",
        )?,
        Vec::new(),
        "nothing refused",
    )?;
    let second = InvitationState::after(Some(&first), t(50), t(2000));
    c.eq(
        (second.first_at, second.last_at, second.count),
        (t(20), t(50), 2),
        "the reference's second invitation",
    )?;
    let o2 = InvitationState::after(None, t(50), t(3000));
    states(vec![("o1", second), ("o2", o2)], "after the second batch").await?;
    c.ok(
        repo.mark_registered(&oid("o1"), "o1@example.org", t(60))
            .await,
        "mark_registered",
    )?;
    states(
        vec![("o1", second), ("o2", o2)],
        "a registration keeps the history",
    )
    .await
}

/// `redeem_token`: the reasons (unknown, expired at `expires_at`, revoked, used, owner
/// already registered) change nothing; a success redeems the token, revokes the
/// owner's other live tokens, registers the owner and appends `Registered`.
pub async fn redeem_token_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("redeem_token_rules");
    let owners = vec![
        owner("a", "c1", Some("a@example.org")),
        owner("b", "c1", Some("b@example.org")),
        owner("d", "c1", Some("d@example.org")),
    ];
    c.ok(repo.upsert_owners(&owners, t(0)).await, "upsert_owners")?;
    c.ok(
        repo.issue_token(&token(1, "a", "b1", t(0), t(100))).await,
        "issue_token",
    )?;
    c.ok(
        repo.issue_token(&token(2, "b", "b1", t(0), t(1000))).await,
        "issue_token",
    )?;
    c.ok(
        repo.issue_token(&token(3, "b", "b2", t(1), t(1000))).await,
        "issue_token",
    )?;
    c.ok(
        repo.issue_token(&token(5, "d", "b1", t(0), t(1000))).await,
        "issue_token",
    )?;
    c.ok(
        repo.issue_token(&token(6, "d", "b1", t(2), t(1000))).await,
        "issue_token",
    )?;
    let redeem = |n: u64, now: Timestamp| async move {
        c.ok(repo.redeem_token(&hash(n), now).await, "redeem_token")
    };
    let rejected = |r| RedeemOutcome::Rejected(r);
    c.eq(
        redeem(99, t(50)).await?,
        rejected(TokenRejection::Unknown),
        "unknown token",
    )?;
    c.eq(
        redeem(1, t(100)).await?,
        rejected(TokenRejection::Expired),
        "token at its expiry",
    )?;
    c.eq(
        redeem(2, t(50)).await?,
        rejected(TokenRejection::Revoked),
        "revoked token",
    )?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Live,
        "expired token unchanged",
    )?;
    for o in &owners {
        c.eq(
            get_owner(c, repo, o.id.as_str()).await?,
            o.clone(),
            "owner after a rejection",
        )?;
    }
    c.eq(
        all_activity(c, repo, "c1").await?,
        vec![],
        "activity after rejections",
    )?;
    let now = t(60);
    let outcome = redeem(5, now).await?;
    let RedeemOutcome::Redeemed { token: got_token } = outcome else {
        return Err(c.fail(format!("a live token was not redeemed: {outcome:?}")));
    };
    // Registering the owner is the directory's step (`mark_registered`), after this.
    c.eq(
        get_owner(c, repo, "d").await?,
        owners[2].clone(),
        "the owner after the store's step alone",
    )?;
    let want_token = TokenRecord {
        state: TokenState::Redeemed { at: now },
        ..token(5, "d", "b1", t(0), t(1000))
    };
    c.eq(got_token, want_token.clone(), "returned token")?;
    c.eq(
        c.ok(repo.token(&hash(5)).await, "token")?,
        Some(want_token),
        "stored token",
    )?;
    c.eq(
        token_state(c, repo, 6).await?,
        TokenState::Revoked { at: now },
        "the owner's other live token",
    )?;
    c.eq(
        all_activity(c, repo, "c1").await?,
        vec![],
        "activity after the store's step (the workflow appends the entry)",
    )?;
    c.eq(
        redeem(5, t(61)).await?,
        rejected(TokenRejection::AlreadyUsed),
        "redeeming again",
    )?;
    c.eq(
        redeem(6, t(61)).await?,
        rejected(TokenRejection::Revoked),
        "the other token",
    )?;
    // A pending token (its message not accepted yet) does not redeem, and changes
    // nothing; redeeming the owner's live one revokes it.
    c.ok(
        repo.issue_token(&pending_token(7, "b", "b3", t(61), t(1000)))
            .await,
        "issue_token (pending)",
    )?;
    c.eq(
        redeem(7, t(61)).await?,
        rejected(TokenRejection::NotSent),
        "a pending token",
    )?;
    c.eq(
        token_state(c, repo, 7).await?,
        TokenState::Pending,
        "the pending token after its refused redeem",
    )?;
    c.eq(
        get_owner(c, repo, "b").await?,
        owners[1].clone(),
        "its owner after the refused redeem",
    )?;
    let b = redeem(3, t(62)).await?;
    c.ensure(matches!(b, RedeemOutcome::Redeemed { .. }), || {
        format!("another owner's live token must still redeem: {b:?}")
    })?;
    c.eq(
        token_state(c, repo, 7).await?,
        TokenState::Revoked { at: t(62) },
        "the owner's pending token after a redeem",
    )
}

/// `redeem_token` is compare-and-set: two concurrent redeems of one token, many
/// times over: exactly one `Redeemed`, the other `Rejected(AlreadyUsed)`, the token
/// redeemed once.
pub async fn redeem_token_concurrently_once(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("redeem_token_concurrently_once");
    let rounds = 40u64;
    let owners: Vec<Owner> = (0..rounds)
        .map(|i| {
            owner(
                &format!("o{i:02}"),
                "c1",
                Some(&format!("o{i}@example.org")),
            )
        })
        .collect();
    c.ok(repo.upsert_owners(&owners, t(0)).await, "upsert_owners")?;
    for (i, o) in owners.iter().enumerate() {
        let n = 100 + i as u64;
        c.ok(
            repo.issue_token(&token(n, o.id.as_str(), "b1", t(0), t(1000)))
                .await,
            "issue_token",
        )?;
        let h = hash(n);
        let (x, y) = futures::join!(repo.redeem_token(&h, t(10)), repo.redeem_token(&h, t(10)));
        let (x, y) = (c.ok(x, "redeem_token")?, c.ok(y, "redeem_token")?);
        let wins = [&x, &y]
            .iter()
            .filter(|r| matches!(r, RedeemOutcome::Redeemed { .. }))
            .count();
        c.ensure(wins == 1, || {
            format!(
                "round {i}: {wins} of two concurrent redeems succeeded: {} / {}",
                outcome_name(&x),
                outcome_name(&y)
            )
        })?;
        c.ensure(
            [&x, &y].contains(&&RedeemOutcome::Rejected(TokenRejection::AlreadyUsed)),
            || {
                format!(
                    "round {i}: the loser must be rejected as already used: {} / {}",
                    outcome_name(&x),
                    outcome_name(&y)
                )
            },
        )?;
    }
    for i in 0..rounds {
        c.eq(
            token_state(c, repo, 100 + i).await?,
            TokenState::Redeemed { at: t(10) },
            "a token redeemed by one of two racing calls",
        )?;
    }
    Ok(())
}

/// `revoke_tokens`: the listed owners' live and pending tokens become revoked at
/// `now`, in one step; other owners' tokens and spent ones stay; the answer counts
/// what it revoked.
pub async fn revoke_tokens_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("revoke_tokens_rules");
    c.ok(
        repo.issue_token(&token(1, "a", "b1", t(0), t(1000))).await,
        "issue_token",
    )?;
    c.ok(
        repo.issue_token(&pending_token(2, "a", "b2", t(1), t(1000)))
            .await,
        "issue_token (pending)",
    )?;
    c.ok(
        repo.issue_token(&token(3, "b", "b1", t(0), t(1000))).await,
        "issue_token",
    )?;
    c.ok(
        repo.issue_token(&token(4, "c", "b1", t(0), t(1000))).await,
        "issue_token",
    )?;
    c.ok(repo.redeem_token(&hash(4), t(2)).await, "redeem_token")?;
    let revoked = c.ok(
        repo.revoke_tokens(&[oid("a"), oid("c"), oid("zz")], t(10))
            .await,
        "revoke_tokens",
    )?;
    c.eq(revoked, 2, "tokens revoked (a's live and pending ones)")?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Revoked { at: t(10) },
        "a's live token",
    )?;
    c.eq(
        token_state(c, repo, 2).await?,
        TokenState::Revoked { at: t(10) },
        "a's pending token",
    )?;
    c.eq(
        token_state(c, repo, 3).await?,
        TokenState::Live,
        "b's token (not listed)",
    )?;
    c.eq(
        token_state(c, repo, 4).await?,
        TokenState::Redeemed { at: t(2) },
        "c's spent token",
    )?;
    c.eq(
        c.ok(
            repo.revoke_tokens(&[oid("a")], t(11)).await,
            "revoke_tokens again",
        )?,
        0,
        "revoking again",
    )
}

/// The answer of a redeem is taken once: `answer_redeem` is `true` for the first of
/// racing callers on a redeemed token and `false` after, and `false` for a live or an
/// unknown token (which it leaves live).
pub async fn redeem_answered_once(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("redeem_answered_once");
    for n in 1..=2 {
        c.ok(
            repo.issue_token(&token(n, &format!("o{n}"), "b1", t(0), t(1000)))
                .await,
            "issue_token",
        )?;
    }
    c.eq(
        c.ok(repo.answer_redeem(&hash(2), t(4)).await, "answer_redeem")?,
        false,
        "the answer of a live token",
    )?;
    c.eq(
        c.ok(repo.answer_redeem(&hash(9), t(4)).await, "answer_redeem")?,
        false,
        "the answer of an unknown token",
    )?;
    let outcome = c.ok(repo.redeem_token(&hash(2), t(5)).await, "redeem_token")?;
    c.ensure(matches!(outcome, RedeemOutcome::Redeemed { .. }), || {
        format!("a live token, once asked for its answer, was not redeemed: {outcome:?}")
    })?;
    let outcome = c.ok(repo.redeem_token(&hash(1), t(5)).await, "redeem_token")?;
    c.ensure(matches!(outcome, RedeemOutcome::Redeemed { .. }), || {
        format!("a live token was not redeemed: {outcome:?}")
    })?;
    let spent = hash(1);
    let answers = join_all((0..4).map(|_| repo.answer_redeem(&spent, t(6)))).await;
    let mut taken = 0;
    for a in answers {
        taken += usize::from(c.ok(a, "answer_redeem")?);
    }
    c.eq(
        taken,
        1,
        "racing callers that took the answer of one redeem",
    )?;
    c.eq(
        c.ok(repo.answer_redeem(&hash(1), t(7)).await, "answer_redeem")?,
        false,
        "the answer of a redeem already answered",
    )?;
    c.eq(
        c.ok(repo.answer_redeem(&hash(2), t(7)).await, "answer_redeem")?,
        true,
        "the answer of the other redeemed token (its own)",
    )
}

/// Owed registrations: a `Redeemed` answer records one (token, owner, batch, the
/// address the link went to, the time); `settle_registration` clears it and appends
/// the entry once, however many callers race, and answers `false` to the rest.
pub async fn owed_registrations_rules(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("owed_registrations_rules");
    c.eq(
        c.ok(repo.owed_registrations().await, "owed_registrations")?,
        vec![],
        "owed registrations of an empty store",
    )?;
    for n in 1..=2 {
        c.ok(
            repo.issue_token(&token(n, &format!("o{n}"), "b1", t(0), t(1000)))
                .await,
            "issue_token",
        )?;
        let outcome = c.ok(repo.redeem_token(&hash(n), t(5)).await, "redeem_token")?;
        c.ensure(matches!(outcome, RedeemOutcome::Redeemed { .. }), || {
            format!("a live token was not redeemed: {outcome:?}")
        })?;
    }
    let mut owed = c.ok(repo.owed_registrations().await, "owed_registrations")?;
    owed.sort_by_key(|o| o.token);
    let want = |n: u64| OwedRegistration {
        token: hash(n),
        owner: oid(&format!("o{n}")),
        batch: bid("b1"),
        sent_to: format!("o{n}@example.org"),
        at: t(5),
    };
    c.eq(owed, vec![want(1), want(2)], "the owed registrations")?;
    let entry = ActivityEntry {
        community: cid("c1"),
        at: t(5),
        kind: ActivityKind::Registered {
            owner: oid("o1"),
            batch: bid("b1"),
        },
    };
    let spent = hash(1);
    let settles = join_all((0..4).map(|_| repo.settle_registration(&spent, Some(&entry)))).await;
    let mut won = 0;
    for s in settles {
        won += usize::from(c.ok(s, "settle_registration")?);
    }
    c.eq(won, 1, "racing settlements of one registration that won")?;
    c.eq(
        all_activity(c, repo, "c1").await?,
        vec![entry.clone()],
        "activity after the settlement (appended once)",
    )?;
    c.eq(
        c.ok(repo.owed_registrations().await, "owed_registrations")?,
        vec![want(2)],
        "owed after one settlement",
    )?;
    c.eq(
        c.ok(
            repo.settle_registration(&hash(2), None).await,
            "settle_registration",
        )?,
        true,
        "settling without an entry (the directory refused the mark)",
    )?;
    c.eq(
        c.ok(repo.owed_registrations().await, "owed_registrations")?,
        vec![],
        "owed after both settlements",
    )?;
    c.eq(
        all_activity(c, repo, "c1").await?,
        vec![entry],
        "activity after a settlement without an entry",
    )
}

// ---------------------------------------------------------------------------------
// Activity.

/// `activity`: newest first by `at`, ties newest-appended first, paged, per
/// community.
pub async fn activity_feed_order_and_paging(repo: &dyn OwnerStorage) -> CheckResult {
    let c = Ctx("activity_feed_order_and_paging");
    let entry = |n: usize, community: &str, at: i64| ActivityEntry {
        community: cid(community),
        at: t(at),
        kind: ActivityKind::DraftSaved {
            draft: DraftId::new(format!("d{n}")).expect("fixture id"),
            selected: n,
        },
    };
    let (e1, e2, e3, e4, e5) = (
        entry(1, "c1", 1),
        entry(2, "c1", 3),
        entry(3, "c1", 2),
        entry(4, "c1", 3),
        entry(5, "c1", 0),
    );
    let other = entry(6, "c2", 10);
    for e in [&e1, &e2, &other, &e3, &e4, &e5] {
        c.ok(repo.append_activity(e).await, "append_activity")?;
    }
    let page = |p: Page, community: &str| {
        let community = cid(community);
        async move { c.ok(repo.activity(&community, p).await, "activity") }
    };
    c.eq(
        page(Page::first(10), "c1").await?,
        vec![e4.clone(), e2.clone(), e3.clone(), e1.clone(), e5.clone()],
        "whole feed",
    )?;
    let p1 = Page::first(2);
    c.eq(page(p1, "c1").await?, vec![e4, e2], "page 1")?;
    c.eq(page(p1.next(), "c1").await?, vec![e3, e1], "page 2")?;
    c.eq(page(p1.next().next(), "c1").await?, vec![e5], "page 3")?;
    c.eq(
        page(p1.next().next().next(), "c1").await?,
        vec![],
        "past the end",
    )?;
    c.eq(
        page(Page::first(10), "c2").await?,
        vec![other],
        "other community",
    )?;
    c.eq(page(Page::first(10), "c3").await?, vec![], "empty feed")
}

// ---------------------------------------------------------------------------------
// The directory suite: a host's `OwnerRepository` over its own schema.

/// What a directory under test must hold when a check starts: the host's communities
/// and owners, which the suite's callback writes in the host's own schema (the suite
/// never writes owners itself). Owners are never invited in a seed (invitation history
/// is the store's); some are registered, as the host says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seed {
    /// The communities.
    pub communities: Vec<Community>,
    /// The owners, each of one of the communities.
    pub owners: Vec<Owner>,
}

/// Something that lends an [`OwnerRepository`]: a host's directory, or one boxed or
/// shared as a trait object.
pub trait AsDirectory: Send + Sync {
    /// The directory.
    fn as_directory(&self) -> &dyn OwnerRepository;
}

impl<T: OwnerRepository> AsDirectory for T {
    fn as_directory(&self) -> &dyn OwnerRepository {
        self
    }
}

impl AsDirectory for Box<dyn OwnerRepository> {
    fn as_directory(&self) -> &dyn OwnerRepository {
        &**self
    }
}

impl AsDirectory for Arc<dyn OwnerRepository> {
    fn as_directory(&self) -> &dyn OwnerRepository {
        &**self
    }
}

/// The pairs of the recipient-integrity rule: two spellings of one mailbox each.
pub const SAME_MAILBOX_PAIRS: [(&str, &str); 4] = [
    ("y@example.org", "y@ｅｘａｍｐｌｅ.org"),
    ("z@example.org", "z@exam\u{AD}ple.org"),
    ("x@bücher.example", "x@xn--bcher-kva.example"),
    ("\"q\"@example.org", "q@example.org"),
];

/// The seed of [`directory_reads`].
pub fn seed_directory_reads() -> Seed {
    Seed {
        communities: vec![
            Community::new(cid("c1"), "Oak HOA").with_reply_to(addr("board@oak.example.org")),
            Community::new(cid("c2"), "Elm HOA"),
        ],
        owners: vec![
            owner("a", "c1", Some("a@example.org")),
            owner("b", "c1", None),
            owner("r", "c1", Some("r@example.org")).with_registered(Some(t(-50))),
            owner("x", "c2", Some("x@example.org")),
        ],
    }
}

/// Reads: `community` (missing is `None`), `communities` lists each once, `owners`
/// leaves missing ids out, `community_owners` filters by access and email and a
/// missing community has no owners. Every owner reads back as seeded.
pub async fn directory_reads(dir: &dyn OwnerRepository) -> CheckResult {
    let c = Ctx("directory_reads");
    let seed = seed_directory_reads();
    c.eq(
        c.ok(dir.community(&cid("c1")).await, "community")?,
        Some(seed.communities[0].clone()),
        "community c1",
    )?;
    c.eq(
        c.ok(dir.community(&cid("nope")).await, "community")?,
        None,
        "a missing community",
    )?;
    let mut listed: Vec<String> = c
        .ok(dir.communities().await, "communities")?
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    listed.sort();
    c.eq(listed, names(&["c1", "c2"]), "communities")?;
    let mut got = c.ok(dir.owners(&[oid("a"), oid("zz"), oid("r")]).await, "owners")?;
    got.sort_by(|x, y| x.id.cmp(&y.id));
    c.eq(
        got,
        vec![seed.owners[0].clone(), seed.owners[2].clone()],
        "owners by id (a missing one left out)",
    )?;
    let filtered = |f: OwnerFilter| async move {
        let owners = c.ok(
            dir.community_owners(&cid("c1"), &f).await,
            "community_owners",
        )?;
        Ok::<_, Failure>(ids(&owners))
    };
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<String>>()
    };
    c.eq(
        filtered(OwnerFilter::all()).await?,
        set(&["a", "b", "r"]),
        "all of c1",
    )?;
    c.eq(
        filtered(OwnerFilter::unregistered_with_email()).await?,
        set(&["a"]),
        "unregistered with an email",
    )?;
    c.eq(
        filtered(OwnerFilter {
            access: AccessFilter::Registered,
            ..OwnerFilter::all()
        })
        .await?,
        set(&["r"]),
        "registered",
    )?;
    c.eq(
        filtered(OwnerFilter {
            email: EmailFilter::WithoutEmail,
            ..OwnerFilter::all()
        })
        .await?,
        set(&["b"]),
        "without an email",
    )?;
    c.eq(
        c.ok(
            dir.community_owners(&cid("nope"), &OwnerFilter::all())
                .await,
            "community_owners",
        )?,
        vec![],
        "owners of a missing community",
    )
}

/// The seed of [`directory_email_holders`]: owners `p0..p7` hold the two spellings of
/// each of [`SAME_MAILBOX_PAIRS`], `s` holds `solo@example.org`, `n` none, and `i` an
/// invalid address.
pub fn seed_directory_email_holders() -> Seed {
    let mut owners: Vec<Owner> = SAME_MAILBOX_PAIRS
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .enumerate()
        .map(|(i, e)| owner(&format!("p{i}"), "c1", Some(e)))
        .collect();
    owners.push(owner("s", "c1", Some("solo@example.org")));
    owners.push(owner("n", "c1", None));
    owners.push(owner("i", "c2", Some("not an address")));
    Seed {
        communities: vec![
            Community::new(cid("c1"), "Oak HOA"),
            Community::new(cid("c2"), "Elm HOA"),
        ],
        owners,
    }
}

/// `email_holders` finds the holders of a mailbox by `delivered_key`, whichever
/// spelling is asked and stored (the recipient-integrity pairs), across communities,
/// invalid addresses included; `shared_email_holders` keeps only keys held twice.
pub async fn directory_email_holders(dir: &dyn OwnerRepository) -> CheckResult {
    let c = Ctx("directory_email_holders");
    for (i, (a, b)) in SAME_MAILBOX_PAIRS.iter().enumerate() {
        for asked in [a, b] {
            let holders = c.ok(
                dir.email_holders(&[(*asked).to_owned()]).await,
                "email_holders",
            )?;
            let mut got: Vec<(String, String)> = holders
                .iter()
                .map(|h| (h.key.clone(), h.owner.to_string()))
                .collect();
            got.sort();
            let key = delivered_key(a);
            c.eq(
                got,
                vec![
                    (key.clone(), format!("p{}", 2 * i)),
                    (key, format!("p{}", 2 * i + 1)),
                ],
                &format!("holders of {asked:?}"),
            )?;
        }
    }
    let keys: Vec<String> = [
        "SOLO@example.org",
        "not an address",
        "nobody@example.org",
        "y@example.org",
    ]
    .map(String::from)
    .into();
    let mut got: Vec<String> = c
        .ok(dir.email_holders(&keys).await, "email_holders")?
        .into_iter()
        .map(|h| h.owner.to_string())
        .collect();
    got.sort();
    c.eq(
        got,
        names(&["i", "p0", "p1", "s"]),
        "holders of several keys",
    )?;
    let mut shared: Vec<String> = c
        .ok(
            dir.shared_email_holders(&keys).await,
            "shared_email_holders",
        )?
        .into_iter()
        .map(|h| h.owner.to_string())
        .collect();
    shared.sort();
    c.eq(shared, names(&["p0", "p1"]), "shared holders")
}

/// The seed of [`directory_update_emails`].
pub fn seed_directory_update_emails() -> Seed {
    Seed {
        communities: vec![
            Community::new(cid("c1"), "Oak HOA"),
            Community::new(cid("c2"), "Elm HOA"),
        ],
        owners: vec![
            owner("a", "c1", Some("a@example.org")),
            owner("b", "c2", Some("b@example.org")),
            owner("e", "c1", None),
            owner("s1", "c1", Some("shared@example.org")),
            owner("s2", "c1", Some("Shared@Example.org")),
        ],
    }
}

/// `update_emails`: all or nothing (`NotFound`, `Precondition` when a new address is
/// another owner's mailbox in any spelling, or given to two edited owners); applied,
/// it returns exactly the owners whose mailbox changed and stores the addresses as
/// given.
pub async fn directory_update_emails(dir: &dyn OwnerRepository) -> CheckResult {
    let c = Ctx("directory_update_emails");
    let seed = seed_directory_update_emails();
    let unchanged = |what: &'static str| async move {
        let mut got = c.ok(
            dir.owners(
                &seed_directory_update_emails()
                    .owners
                    .iter()
                    .map(|o| o.id.clone())
                    .collect::<Vec<_>>(),
            )
            .await,
            "owners",
        )?;
        got.sort_by(|x, y| x.id.cmp(&y.id));
        let mut want = seed_directory_update_emails().owners;
        want.sort_by(|x, y| x.id.cmp(&y.id));
        c.eq(got, want, what)
    };
    c.err(
        dir.update_emails(&[
            edit("a", Some("a3@example.org")),
            edit("zz", Some("z@example.org")),
        ])
        .await,
        "NotFound",
        is_not_found,
        "an edit of a missing owner",
    )?;
    unchanged("after an edit of a missing owner").await?;
    for spelling in [
        "b@ｅｘａｍｐｌｅ.org",
        "\"b\"@example.org",
        " B@EXAMPLE.org ",
    ] {
        c.err(
            dir.update_emails(&[edit("a", Some(spelling))]).await,
            "Precondition",
            is_precondition,
            "taking another owner's mailbox",
        )?;
        unchanged("after taking another owner's mailbox").await?;
    }
    c.err(
        dir.update_emails(&[
            edit("a", Some("new@bücher.example")),
            edit("e", Some("NEW@xn--bcher-kva.example")),
        ])
        .await,
        "Precondition",
        is_precondition,
        "one mailbox given to two edited owners",
    )?;
    unchanged("after giving one mailbox to two owners").await?;
    let changed = c.ok(
        dir.update_emails(&[
            edit("a", Some("a2@example.org")),
            edit("b", Some(" B@Example.org")),
            edit("e", Some("e@example.org")),
        ])
        .await,
        "update_emails",
    )?;
    c.eq(sorted(changed), names(&["a", "e"]), "changed owners")?;
    let mut got = c.ok(dir.owners(&[oid("a"), oid("b"), oid("e")]).await, "owners")?;
    got.sort_by(|x, y| x.id.cmp(&y.id));
    let emails: Vec<Option<String>> = got.into_iter().map(|o| o.primary_email).collect();
    c.eq(
        emails,
        vec![
            Some("a2@example.org".into()),
            Some(" B@Example.org".into()),
            Some("e@example.org".into()),
        ],
        "addresses after the edit",
    )?;
    // Swapping two addresses in one edit is not a conflict.
    c.ok(
        dir.update_emails(&[
            edit("a", Some("e@example.org")),
            edit("e", Some("a2@example.org")),
        ])
        .await,
        "update_emails (swap)",
    )?;
    let _ = seed;
    Ok(())
}

/// The seed of [`directory_mark_registered`].
pub fn seed_directory_mark_registered() -> Seed {
    Seed {
        communities: vec![Community::new(cid("c1"), "Oak HOA")],
        owners: vec![
            owner("a", "c1", Some("Ann@Example.org")),
            owner("b", "c1", Some("b@example.org")),
            owner("n", "c1", None),
            owner("y", "c1", Some("y@bücher.example")),
        ],
    }
}

/// `mark_registered`: registers at the given time while the owner's email is the
/// link's address (the same mailbox by `delivered_key`, however it is spelled),
/// refuses with `AddressChanged` otherwise (changing nothing), is idempotent, and
/// answers `UnknownOwner` for a missing owner.
pub async fn directory_mark_registered(dir: &dyn OwnerRepository) -> CheckResult {
    let c = Ctx("directory_mark_registered");
    let owners = seed_directory_mark_registered().owners;
    let mark = |o: &'static str, to: &'static str, at: Timestamp| async move {
        c.ok(
            dir.mark_registered(&oid(o), to, at).await,
            "mark_registered",
        )
    };
    for (o, to) in [
        ("b", "someone-else@example.org"),
        ("n", "n@example.org"),
        ("a", ""),
    ] {
        c.eq(
            mark(o, to, t(5)).await?,
            Marked::AddressChanged,
            "a link sent to another address",
        )?;
    }
    c.eq(
        mark("zz", "zz@example.org", t(5)).await?,
        Marked::UnknownOwner,
        "an unknown owner",
    )?;
    let mut got = c.ok(
        dir.owners(&owners.iter().map(|o| o.id.clone()).collect::<Vec<_>>())
            .await,
        "owners",
    )?;
    got.sort_by(|x, y| x.id.cmp(&y.id));
    c.eq(got, owners.clone(), "owners after refused marks")?;
    let registered =
        |o: &Owner, at| Marked::Registered(Box::new(o.clone().with_registered(Some(at))));
    c.eq(
        mark("a", " ann@EXAMPLE.org", t(6)).await?,
        registered(&owners[0], t(6)),
        "a link sent to another spelling of the owner's address",
    )?;
    c.eq(
        mark("a", "ann@example.org", t(9)).await?,
        registered(&owners[0], t(6)),
        "marking again (idempotent: the first time stays)",
    )?;
    c.eq(
        mark("y", "y@xn--bcher-kva.example", t(7)).await?,
        registered(&owners[3], t(7)),
        "a link sent to the A-label form of the owner's domain",
    )?;
    c.eq(
        c.ok(dir.owners(&[oid("a")]).await, "owners")?,
        vec![owners[0].clone().with_registered(Some(t(6)))],
        "the stored owner",
    )
}

/// The names of every directory check, in the order [`directory_conformance`] runs
/// them.
pub const DIRECTORY_CHECKS: &[&str] = &[
    "directory_reads",
    "directory_email_holders",
    "directory_update_emails",
    "directory_mark_registered",
];

/// Runs every directory check, each against a fresh directory that `make` builds
/// holding the check's [`Seed`] (written in the host's own schema), and returns every
/// failure. What a host runs against its own `OwnerRepository`.
pub async fn directory_conformance<F, Fut, D>(make: F) -> Result<(), Vec<Failure>>
where
    F: Fn(Seed) -> Fut,
    Fut: Future<Output = D>,
    D: AsDirectory,
{
    let mut failures = Vec::new();
    macro_rules! run {
        ($(($seed:ident, $check:ident)),* $(,)?) => {$(
            let dir = make($seed()).await;
            if let Err(failure) = $check(dir.as_directory()).await {
                failures.push(failure);
            }
        )*};
    }
    run!(
        (seed_directory_reads, directory_reads),
        (seed_directory_email_holders, directory_email_holders),
        (seed_directory_update_emails, directory_update_emails),
        (seed_directory_mark_registered, directory_mark_registered),
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Seeds one of the crate's own directories through [`OwnerDirectory`]: how
/// [`repository_conformance`] runs the directory checks too.
pub async fn seed_through_upserts<D: OwnerDirectory + ?Sized>(
    dir: &D,
    seed: &Seed,
) -> RepoResult<()> {
    for community in &seed.communities {
        dir.upsert_community(community).await?;
    }
    dir.upsert_owners(&seed.owners, t(-1000)).await
}

// ---------------------------------------------------------------------------------
// Running the repository suite.

/// Something that lends both storage ports ([`OwnerStorage`]): any implementation, or one boxed or
/// shared as a trait object, so the suite runs the same through each.
pub trait AsRepository: Send + Sync {
    /// The repository.
    fn as_repository(&self) -> &dyn OwnerStorage;
}

impl<T: OwnerStorage> AsRepository for T {
    fn as_repository(&self) -> &dyn OwnerStorage {
        self
    }
}

impl AsRepository for Box<dyn OwnerStorage> {
    fn as_repository(&self) -> &dyn OwnerStorage {
        &**self
    }
}

impl AsRepository for Arc<dyn OwnerStorage> {
    fn as_repository(&self) -> &dyn OwnerStorage {
        &**self
    }
}

/// The names of every repository check, in the order [`repository_conformance`] runs
/// them.
pub const REPOSITORY_CHECKS: &[&str] = &[
    "communities_round_trip",
    "owners_round_trip",
    "upsert_merge_rules",
    "upsert_email_change_revokes_tokens",
    "upsert_is_all_or_nothing",
    "import_session_is_one_step",
    "community_owners_filters",
    "email_holders_rules",
    "update_emails_applies_and_revokes",
    "update_emails_not_found_changes_nothing",
    "update_emails_uniqueness",
    "drafts_round_trip",
    "create_batch_stores_everything",
    "create_batch_is_all_or_nothing",
    "create_batch_duplicate_id",
    "claim_deliveries_rules",
    "claim_deliveries_concurrently",
    "renew_claims_rules",
    "stale_holder_writes_are_refused",
    "held_claims_and_revoke",
    "renewal_races_take_over",
    "record_delivery_rules",
    "release_deliveries_rules",
    "issue_token_rules",
    "issue_tokens_in_a_group",
    "tokens_pending_until_sent",
    "record_deliveries_in_a_group",
    "invitation_states_follow_sent_messages",
    "redeem_token_rules",
    "redeem_token_concurrently_once",
    "revoke_tokens_rules",
    "owed_registrations_rules",
    "redeem_answered_once",
    "activity_feed_order_and_paging",
];

/// Runs every repository check, each against a fresh repository from `make`, then
/// the [directory checks](DIRECTORY_CHECKS) on fresh ones seeded through their own
/// upserts, and returns every failure.
pub async fn repository_conformance<F, Fut, R>(make: F) -> Result<(), Vec<Failure>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = R>,
    R: AsRepository,
{
    let mut failures = Vec::new();
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            let repo = make().await;
            if let Err(failure) = $check(repo.as_repository()).await {
                failures.push(failure);
            }
        )*};
    }
    run!(
        communities_round_trip,
        owners_round_trip,
        upsert_merge_rules,
        upsert_email_change_revokes_tokens,
        upsert_is_all_or_nothing,
        import_session_is_one_step,
        community_owners_filters,
        email_holders_rules,
        update_emails_applies_and_revokes,
        update_emails_not_found_changes_nothing,
        update_emails_uniqueness,
        drafts_round_trip,
        create_batch_stores_everything,
        create_batch_is_all_or_nothing,
        create_batch_duplicate_id,
        claim_deliveries_rules,
        claim_deliveries_concurrently,
        renew_claims_rules,
        stale_holder_writes_are_refused,
        held_claims_and_revoke,
        renewal_races_take_over,
        record_delivery_rules,
        release_deliveries_rules,
        unreachable_runs_are_counted,
        issue_token_rules,
        issue_tokens_in_a_group,
        tokens_pending_until_sent,
        record_deliveries_in_a_group,
        invitation_states_follow_sent_messages,
        skipped_deliveries_are_settled,
        redeem_token_rules,
        redeem_token_concurrently_once,
        revoke_tokens_rules,
        owed_registrations_rules,
        redeem_answered_once,
        activity_feed_order_and_paging,
    );
    // The directory checks, over the repository's own directory seeded through its
    // upserts.
    macro_rules! run_directory {
        ($(($seed:ident, $check:ident)),* $(,)?) => {$(
            let repo = make().await;
            let result = match seed_through_upserts(repo.as_repository(), &$seed()).await {
                Ok(()) => $check(repo.as_repository()).await,
                Err(e) => Err(Ctx(stringify!($check)).fail(format!("seeding: {e}"))),
            };
            if let Err(failure) = result {
                failures.push(failure);
            }
        )*};
    }
    run_directory!(
        (seed_directory_reads, directory_reads),
        (seed_directory_email_holders, directory_email_holders),
        (seed_directory_update_emails, directory_update_emails),
        (seed_directory_mark_registered, directory_mark_registered),
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

// ---------------------------------------------------------------------------------
// The transport suite.

/// Where a transport's messages can be read back: the in-memory transport itself, a
/// mail server's received mail, an outbox directory.
///
/// The suite gives each message a recipient of its own and polls [`received`](Self::received)
/// (for up to [`ARRIVAL_TIMEOUT`]) until what it sent has arrived, so a sink may
/// return everything it ever received, and mail may arrive a little after `send`
/// returned.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Every message received so far: the envelope and the bytes as stored.
    async fn received(&self) -> Vec<(Envelope, Vec<u8>)>;
}

#[async_trait]
impl<F> Sink for F
where
    F: Fn() -> Vec<(Envelope, Vec<u8>)> + Send + Sync,
{
    async fn received(&self) -> Vec<(Envelope, Vec<u8>)> {
        self()
    }
}

#[async_trait]
impl Sink for InMemoryTransport {
    async fn received(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.messages()
            .into_iter()
            .map(|m| (m.envelope, m.bytes))
            .collect()
    }
}

/// How long the transport suite waits for sent mail to show up in the [`Sink`].
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `received` is the message `sent`, byte for byte.
///
/// The suite only sends messages with CRLF line endings that end in CRLF, so a
/// transport that normalises bare LF to CRLF passes. A receiving server may prepend
/// trace header fields (`Received:`, `Return-Path:`): they are allowed before the
/// message's first byte, and nothing else is. Dot-stuffing must be undone exactly.
pub fn same_message(sent: &[u8], received: &[u8]) -> bool {
    if received == sent {
        return true;
    }
    let Some(prefix) = received
        .strip_suffix(sent)
        .and_then(|p| std::str::from_utf8(p).ok())
    else {
        return false;
    };
    prefix.ends_with("\r\n")
        && !prefix.contains("\r\n\r\n")
        && prefix.split("\r\n").filter(|l| !l.is_empty()).all(|line| {
            line.starts_with([' ', '\t'])
                || line.split_once(':').is_some_and(|(name, _)| {
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                })
        })
}

fn nonce() -> String {
    let mut bytes = [0u8; 6];
    // Only makes recipients unique across runs sharing a sink; a fixed value would do
    // for a fresh sink, so a failing random source is not an error.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Outgoing {
    envelope: Envelope,
    bytes: Vec<u8>,
}

fn outgoing(check: &str, run: &str, n: usize, body: &str) -> Outgoing {
    let to = addr(&format!("{check}-{run}-{n}@conformance.example.org"));
    let from = addr("sender@conformance.example.org");
    let mut bytes = format!(
        "From: Conformance <{from}>\r\nTo: <{to}>\r\nSubject: {check} {n}\r\n\
         Message-ID: <{check}.{run}.{n}@conformance.example.org>\r\n\
         Date: Thu, 26 Nov 2026 14:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    )
    .into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    Outgoing {
        envelope: Envelope::new(from, to),
        bytes,
    }
}

/// Waits until each message has arrived at least once, then checks each arrived
/// exactly once, byte for byte, with its envelope.
async fn check_arrived(c: Ctx, sink: &dyn Sink, sent: &[Outgoing]) -> CheckResult {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let received = sink.received().await;
        let copies = |o: &Outgoing| {
            received
                .iter()
                .filter(|(env, _)| env.to == o.envelope.to)
                .collect::<Vec<_>>()
        };
        let all_there = sent.iter().all(|o| !copies(o).is_empty());
        if all_there || tokio::time::Instant::now() >= deadline {
            for o in sent {
                let got = copies(o);
                c.ensure(got.len() == 1, || {
                    format!(
                        "the message to {} arrived {} times (waited up to {ARRIVAL_TIMEOUT:?})",
                        o.envelope.to,
                        got.len()
                    )
                })?;
                let (envelope, bytes) = got[0];
                c.eq(&envelope.from, &o.envelope.from, "envelope sender")?;
                c.ensure(same_message(&o.bytes, bytes), || {
                    let at = o
                        .bytes
                        .iter()
                        .zip(bytes.iter())
                        .position(|(a, b)| a != b)
                        .unwrap_or(o.bytes.len().min(bytes.len()));
                    format!(
                        "the message to {} arrived altered: {} bytes sent, {} received, \
                         first difference at byte {at}",
                        o.envelope.to,
                        o.bytes.len(),
                        bytes.len()
                    )
                })?;
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn send_all(c: Ctx, transport: &dyn MailTransport, messages: &[Outgoing]) -> CheckResult {
    let results = join_all(
        messages
            .iter()
            .map(|m| transport.send(&m.envelope, &m.bytes)),
    )
    .await;
    for (m, r) in messages.iter().zip(results) {
        r.map_err(|e| c.fail(format!("sending to {}: {e}", m.envelope.to)))?;
    }
    Ok(())
}

/// One message arrives once, with its envelope, byte for byte.
pub async fn transport_delivers_once(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_delivers_once");
    let m = [outgoing(
        "once",
        &nonce(),
        0,
        "Hello Ann,\r\n\r\nWelcome.\r\n",
    )];
    send_all(c, transport, &m).await?;
    check_arrived(c, sink, &m).await
}

/// Lines starting with `.` (a lone `.` included, which ends SMTP DATA unless
/// stuffed), trailing white space and long lines survive.
pub async fn transport_preserves_bytes(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_preserves_bytes");
    let long = "x".repeat(990);
    let body = format!(
        "first line\r\n.\r\n..two dots\r\n.leading dot\r\n. dot space\r\n\
         trailing space  \r\n\ttab first\r\n\r\n\r\n{long}\r\n.\r\nlast line\r\n"
    );
    let m = [outgoing("bytes", &nonce(), 0, &body)];
    send_all(c, transport, &m).await?;
    check_arrived(c, sink, &m).await
}

/// 50 concurrent sends: every message arrives exactly once.
pub async fn transport_concurrent_sends(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_concurrent_sends");
    let run = nonce();
    let messages: Vec<Outgoing> = (0..50)
        .map(|n| outgoing("concurrent", &run, n, &format!("Message {n} of 50.\r\n")))
        .collect();
    send_all(c, transport, &messages).await?;
    check_arrived(c, sink, &messages).await
}

/// A 2 MB message arrives intact.
pub async fn transport_large_message(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_large_message");
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut body = String::with_capacity(2 * 1024 * 1024 + 100);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut line = 0usize;
    while body.len() < 2 * 1024 * 1024 {
        if line % 1000 == 999 {
            body.push('.');
        }
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.push(ALPHABET[(x % 64) as usize] as char);
        }
        body.push_str("\r\n");
        line += 1;
    }
    let m = [outgoing("large", &nonce(), 0, &body)];
    send_all(c, transport, &m).await?;
    check_arrived(c, sink, &m).await
}

/// `close`, then sending again, works.
pub async fn transport_send_after_close(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_send_after_close");
    let run = nonce();
    let first = [outgoing("reopen", &run, 0, "before close\r\n")];
    send_all(c, transport, &first).await?;
    transport
        .close()
        .await
        .map_err(|e| c.fail(format!("close: {e}")))?;
    let second = [outgoing("reopen", &run, 1, "after close\r\n")];
    send_all(c, transport, &second).await?;
    check_arrived(c, sink, &first).await?;
    check_arrived(c, sink, &second).await
}

/// The names of every transport check, in the order [`transport_conformance`] runs
/// them.
pub const TRANSPORT_CHECKS: &[&str] = &[
    "transport_delivers_once",
    "transport_preserves_bytes",
    "transport_concurrent_sends",
    "transport_large_message",
    "transport_send_after_close",
];

/// Runs every transport check against `transport`, reading what arrived from `sink`
/// (for [`InMemoryTransport`], the transport itself), and returns every failure.
/// Needs a tokio runtime with timers (the suite waits for mail to arrive).
pub async fn transport_conformance(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> Result<(), Vec<Failure>> {
    let mut failures = Vec::new();
    for result in [
        transport_delivers_once(transport, sink).await,
        transport_preserves_bytes(transport, sink).await,
        transport_concurrent_sends(transport, sink).await,
        transport_large_message(transport, sink).await,
        transport_send_after_close(transport, sink).await,
    ] {
        if let Err(failure) = result {
            failures.push(failure);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_message_allows_only_trace_headers_before() {
        let sent = b"Subject: x\r\n\r\nbody\r\n";
        assert!(same_message(sent, sent));
        let traced = b"Received: from a by b;\r\n  Thu, 26 Nov 2026\r\nReturn-Path: <a@b.org>\r\nSubject: x\r\n\r\nbody\r\n";
        assert!(same_message(sent, traced));
        assert!(!same_message(sent, b"Subject: x\r\n\r\nbody"));
        assert!(!same_message(
            sent,
            b"junk\r\n\r\nSubject: x\r\n\r\nbody\r\n"
        ));
        assert!(!same_message(sent, b"Subject: x\r\n\r\n.body\r\n"));
    }
}
