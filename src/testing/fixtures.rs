//! Fixtures: the ids, owners, batches and tokens the checks build, and reads
//! that fail the check on an error.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::domain::{
    ActivityEntry, ActivityKind, Batch, BatchId, CommunityId, Delivery, DeliveryCounts,
    DeliveryOutcome, DeliveryState, EmailAddress, InvitationState, Mailbox, NewBatch, Owner,
    OwnerId, Page, PropertyId, SenderId, Timestamp, TokenHash, TokenRecord, TokenState,
};
use crate::invite::Invite;
use crate::repository::{EmailEdit, OwnerRepositoryExt, OwnerStorage, RedeemOutcome};
use crate::selection::Selection;

use super::harness::*;

const T0: i64 = 1_800_000_000;

/// A fixed time: `T0 + seconds`.
pub(super) fn t(seconds: i64) -> Timestamp {
    Timestamp::from_unix_seconds(T0 + seconds)
}

pub(super) fn cid(id: &str) -> CommunityId {
    CommunityId::new(id).expect("fixture id")
}

pub(super) fn oid(id: &str) -> OwnerId {
    OwnerId::new(id).expect("fixture id")
}

pub(super) fn sid(id: &str) -> SenderId {
    SenderId::new(id).expect("fixture id")
}

/// The lease the checks ask for.
pub(super) const LEASE: Duration = Duration::from_secs(30);

pub(super) fn claimed_state(at: Timestamp, holder: &SenderId, until: Timestamp) -> DeliveryState {
    DeliveryState::Claimed {
        at,
        holder: holder.clone(),
        until,
    }
}

pub(super) fn sorted_owners(deliveries: &[Delivery]) -> Vec<&str> {
    let mut owners: Vec<&str> = deliveries.iter().map(|d| d.owner.as_str()).collect();
    owners.sort_unstable();
    owners
}

pub(super) fn names(owners: &[&str]) -> Vec<String> {
    owners.iter().map(|o| (*o).to_owned()).collect()
}

pub(super) fn sorted(owners: Vec<OwnerId>) -> Vec<String> {
    let mut owners: Vec<String> = owners.into_iter().map(String::from).collect();
    owners.sort_unstable();
    owners
}

pub(super) fn bid(id: &str) -> BatchId {
    BatchId::new(id).expect("fixture id")
}

pub(super) fn addr(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).expect("fixture address")
}

pub(super) fn owner(id: &str, community: &str, email: Option<&str>) -> Owner {
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

pub(super) fn invite(community: &str) -> Invite {
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

pub(super) fn batch(id: &str, community: &str, created_at: Timestamp) -> Batch {
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

pub(super) fn new_batch(id: &str, community: &str, owners: &[&str], at: Timestamp) -> NewBatch {
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

pub(super) fn hash(n: u64) -> TokenHash {
    let mut bytes = [0x5a; 32];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    TokenHash(bytes)
}

pub(super) fn token(
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
pub(super) fn pending_token(
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

pub(super) fn edit(owner: &str, email: Option<&str>) -> EmailEdit {
    EmailEdit {
        owner: oid(owner),
        email: email.map(str::to_owned),
    }
}

pub(super) fn ids(owners: &[Owner]) -> BTreeSet<String> {
    owners.iter().map(|o| o.id.to_string()).collect()
}

pub(super) async fn token_state(
    c: Ctx,
    repo: &dyn OwnerStorage,
    n: u64,
) -> Result<TokenState, Failure> {
    c.ok(repo.token(&hash(n)).await, "token")?
        .map(|t| t.state)
        .ok_or_else(|| c.fail(format!("token {n} is missing")))
}

pub(super) async fn get_owner(c: Ctx, repo: &dyn OwnerStorage, id: &str) -> Result<Owner, Failure> {
    c.ok(repo.owner(&oid(id)).await, "owner")?
        .ok_or_else(|| c.fail(format!("owner `{id}` is missing")))
}

/// The store's invitation state of one owner.
pub(super) async fn invitation_state(
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

pub(super) async fn all_activity(
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
pub(super) async fn check_counts(c: Ctx, repo: &dyn OwnerStorage, batch: &str) -> CheckResult {
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

pub(super) async fn delivery(
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

pub(super) fn outcome_name(outcome: &RedeemOutcome) -> String {
    match outcome {
        RedeemOutcome::Redeemed { .. } => "Redeemed".into(),
        RedeemOutcome::Rejected(reason) => format!("Rejected({reason:?})"),
    }
}

pub(super) fn sent(expires_at: Timestamp, attempts: u32) -> DeliveryOutcome {
    DeliveryOutcome::Sent {
        expires_at,
        attempts,
    }
}

pub(super) fn failed(error: &str, attempts: u32) -> DeliveryOutcome {
    DeliveryOutcome::Failed {
        error: error.into(),
        attempts,
    }
}

/// Issues each token with its own `issue_token` call, in order (not as one group:
/// the checks of `issue_tokens` call it themselves).
pub(super) async fn issue_each(
    c: Ctx,
    repo: &dyn OwnerStorage,
    tokens: &[TokenRecord],
) -> CheckResult {
    for token in tokens {
        let doing = match token.state {
            TokenState::Pending => "issue_token (pending)",
            _ => "issue_token",
        };
        c.ok(repo.issue_token(token).await, doing)?;
    }
    Ok(())
}

/// Creates the batch `id` of [`new_batch`] with a delivery to each owner.
pub(super) async fn create_batch(
    c: Ctx,
    repo: &dyn OwnerStorage,
    id: &str,
    community: &str,
    owners: &[&str],
    at: Timestamp,
) -> CheckResult {
    c.ok(
        repo.create_batch(&new_batch(id, community, owners, at))
            .await,
        "create_batch",
    )
}

/// Claims up to `limit` deliveries of `batch` for `sender` at `at`, for [`LEASE`].
pub(super) async fn claim(
    c: Ctx,
    repo: &dyn OwnerStorage,
    batch: &str,
    sender: &SenderId,
    limit: usize,
    at: Timestamp,
) -> Result<Vec<Delivery>, Failure> {
    c.ok(
        repo.claim_deliveries(&bid(batch), sender, limit, LEASE, at)
            .await,
        "claim_deliveries",
    )
}

/// Records a group of outcomes from `sender` at `at`; the owners it refused, sorted.
pub(super) async fn record(
    c: Ctx,
    repo: &dyn OwnerStorage,
    batch: &str,
    sender: &SenderId,
    outcomes: &[(OwnerId, DeliveryOutcome)],
    at: Timestamp,
) -> Result<Vec<String>, Failure> {
    let refused = c.ok(
        repo.record_deliveries(&bid(batch), sender, outcomes, at)
            .await,
        "record_deliveries",
    )?;
    Ok(sorted(refused))
}
