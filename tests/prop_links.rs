//! Links are pending until their message is accepted, as a property of the storage
//! port against a model, on the in-memory and the SQLite adapters: whatever sequence
//! of batches, claims (each storing a pending token, as the send engine does), sent,
//! failed and refused outcomes, releases, email changes and redeems, every token is in
//! the state the model says, and each owner's live tokens belong to one batch at most.
//!
//! The model is the rule in a few lines: a claim's token is pending; recording the
//! delivery as sent makes that delivery's pending tokens live and revokes the owner's
//! live tokens of other batches; nothing else a run does touches a token; an email
//! change and a redeem revoke the owner's pending and live tokens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use owner_access::InMemoryRepository;
use owner_access::domain::{
    ActivityEntry, ActivityKind, Batch, BatchId, CommunityId, DeliveryOutcome, EmailAddress,
    Mailbox, NewBatch, Owner, OwnerId, PropertyId, Registered, SenderId, Timestamp, TokenHash,
    TokenRecord, TokenRejection, TokenState,
};
use owner_access::invite::Invite;
use owner_access::prelude::*;
use owner_access::repository::{EmailEdit, Marked, RedeemOutcome};
use owner_access::selection::Selection;
use proptest::prelude::*;

const OWNERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A new batch to these owners (a bit mask), every delivery pending.
    NewBatch(u8),
    /// Claims every pending delivery of a batch and stores a pending token for each.
    Claim(usize),
    /// Records a delivery (batch, owner) as sent, or as failed.
    Record(usize, usize, bool),
    /// Gives a delivery back, pending.
    Release(usize, usize),
    /// The owner's primary email changes.
    EmailChange(usize),
    /// Redeems the n-th token issued.
    Redeem(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u8..8).prop_map(Op::NewBatch),
        3 => (0usize..4).prop_map(Op::Claim),
        4 => (0usize..4, 0..OWNERS, proptest::bool::weighted(0.75))
            .prop_map(|(b, o, sent)| Op::Record(b, o, sent)),
        1 => (0usize..4, 0..OWNERS).prop_map(|(b, o)| Op::Release(b, o)),
        1 => (0..OWNERS).prop_map(Op::EmailChange),
        2 => (0usize..12).prop_map(Op::Redeem),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Pending,
    Claimed,
    Settled,
}

/// The model: each token's owner, batch and state; each delivery's state.
#[derive(Default)]
struct Model {
    tokens: Vec<(usize, usize, TokenState)>,
    deliveries: BTreeMap<(usize, usize), Delivery>,
    batches: usize,
    registered: [bool; OWNERS],
}

impl Model {
    fn revoke(&mut self, owner: usize, at: Timestamp, which: impl Fn(usize, TokenState) -> bool) {
        for (o, b, state) in &mut self.tokens {
            if *o == owner
                && matches!(state, TokenState::Pending | TokenState::Live)
                && which(*b, *state)
            {
                *state = TokenState::Revoked { at };
            }
        }
    }

    fn sent(&mut self, owner: usize, batch: usize, at: Timestamp) {
        self.revoke(owner, at, |b, s| s == TokenState::Live && b != batch);
        for (o, b, state) in &mut self.tokens {
            if *o == owner && *b == batch && *state == TokenState::Pending {
                *state = TokenState::Live;
            }
        }
    }
}

fn t(step: usize) -> Timestamp {
    Timestamp::from_unix_seconds(1_800_000_000 + step as i64)
}

fn oid(o: usize) -> OwnerId {
    OwnerId::new(format!("o{o}")).unwrap()
}

fn bid(b: usize) -> BatchId {
    BatchId::new(format!("b{b}")).unwrap()
}

fn hash(n: usize) -> TokenHash {
    let mut bytes = [0xa5; 32];
    bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
    TokenHash(bytes)
}

fn community() -> CommunityId {
    CommunityId::new("c1").unwrap()
}

fn new_batch(b: usize, owners: &[usize], at: Timestamp) -> NewBatch {
    let invite = Invite {
        community: community(),
        selection: Selection::of(owners.iter().map(|o| oid(*o))),
        subject: "Register".into(),
        text_body: Some("{{registration_link}}".into()),
        html_body: None,
        reply_to: None,
        summary_to: None,
        attachments: Vec::new(),
        draft: None,
        from: None,
        portal_url: None,
    };
    NewBatch {
        batch: Batch {
            id: bid(b),
            community: community(),
            invite,
            sender: Mailbox::parse("HOA <hoa@example.org>").unwrap(),
            portal_url: "https://portal.example.org/register".into(),
            token_ttl_seconds: 14 * 86_400,
            created_at: at,
            resend: false,
        },
        deliveries: owners
            .iter()
            .map(|o| {
                (
                    oid(*o),
                    EmailAddress::parse(&format!("o{o}@example.org")).unwrap(),
                )
            })
            .collect(),
        activity: ActivityEntry {
            community: community(),
            at,
            kind: ActivityKind::BatchCreated {
                batch: bid(b),
                recipients: owners.len(),
                excluded: 0,
                resend: false,
            },
        },
    }
}

/// Runs `ops` on `repo` and on the model, comparing every token after each step.
async fn run(repo: &dyn OwnerStorage, ops: &[Op]) -> Result<(), TestCaseError> {
    let owners: Vec<Owner> = (0..OWNERS)
        .map(|o| {
            Owner::new(
                oid(o),
                community(),
                PropertyId::new(format!("p{o}")).unwrap(),
                "Ann",
                format!("Lee{o}"),
            )
            .with_primary_email(format!("o{o}@example.org"))
        })
        .collect();
    repo.upsert_owners(&owners, t(0)).await.unwrap();
    let sender = SenderId::new("sender").unwrap();
    let lease = Duration::from_secs(86_400);
    let mut model = Model::default();
    let mut emails = 0;
    // Each owner's address now: what a message claimed now is sent to.
    let mut address: Vec<String> = (0..OWNERS).map(|o| format!("o{o}@example.org")).collect();
    for (i, op) in ops.iter().enumerate() {
        let now = t(i + 1);
        match *op {
            Op::NewBatch(mask) => {
                let to: Vec<usize> = (0..OWNERS).filter(|o| mask & (1 << o) != 0).collect();
                let b = model.batches;
                repo.create_batch(&new_batch(b, &to, now)).await.unwrap();
                model.batches += 1;
                for o in to {
                    model.deliveries.insert((b, o), Delivery::Pending);
                }
            }
            Op::Claim(b) if b >= model.batches => {}
            Op::Claim(b) => {
                let claimed = repo
                    .claim_deliveries(&bid(b), &sender, 16, lease, now)
                    .await
                    .unwrap();
                let mut records = Vec::new();
                let mut want: Vec<String> = Vec::new();
                for ((batch, o), d) in &mut model.deliveries {
                    if *batch == b && *d == Delivery::Pending {
                        *d = Delivery::Claimed;
                        want.push(oid(*o).to_string());
                        let n = model.tokens.len() + records.len();
                        records.push(TokenRecord {
                            hash: hash(n),
                            owner: oid(*o),
                            batch: bid(b),
                            issued_at: now,
                            expires_at: now + Duration::from_secs(14 * 86_400),
                            sent_to: address[*o].clone(),
                            state: TokenState::Pending,
                        });
                    }
                }
                let mut got: Vec<String> = claimed.iter().map(|d| d.owner.to_string()).collect();
                got.sort();
                prop_assert_eq!(got, want, "claimed");
                repo.issue_tokens(&records).await.unwrap();
                for r in records {
                    let o = r.owner.as_str()[1..].parse().unwrap();
                    model.tokens.push((o, b, TokenState::Pending));
                }
            }
            Op::Record(b, o, sent) => {
                if b >= model.batches {
                    continue;
                }
                let outcome = if sent {
                    DeliveryOutcome::Sent {
                        expires_at: now + Duration::from_secs(14 * 86_400),
                        attempts: 1,
                    }
                } else {
                    DeliveryOutcome::Failed {
                        error: "550 no such user".into(),
                        attempts: 1,
                    }
                };
                let refused = repo
                    .record_deliveries(&bid(b), &sender, &[(oid(o), outcome)], now)
                    .await
                    .unwrap();
                let held = model.deliveries.get(&(b, o)) == Some(&Delivery::Claimed);
                prop_assert_eq!(refused.is_empty(), held, "recorded only when held");
                if held {
                    model.deliveries.insert((b, o), Delivery::Settled);
                    if sent {
                        model.sent(o, b, now);
                    }
                }
            }
            Op::Release(b, o) => {
                if b >= model.batches {
                    continue;
                }
                let refused = repo
                    .release_deliveries(&bid(b), &sender, &[oid(o)])
                    .await
                    .unwrap();
                let held = model.deliveries.get(&(b, o)) == Some(&Delivery::Claimed);
                prop_assert_eq!(refused.is_empty(), held, "released only when held");
                if held {
                    model.deliveries.insert((b, o), Delivery::Pending);
                }
            }
            Op::EmailChange(o) => {
                emails += 1;
                let edit = EmailEdit {
                    owner: oid(o),
                    email: Some(format!("o{o}.{emails}@example.org")),
                };
                address[o] = edit.email.clone().unwrap();
                // The directory's edit, then the store's bookkeeping (as the service).
                let changed = repo.update_emails(&[edit]).await.unwrap();
                repo.revoke_tokens(&changed, now).await.unwrap();
                model.revoke(o, now, |_, _| true);
            }
            Op::Redeem(n) => {
                // The workflow asks the directory first: a registered owner's link is
                // refused as used without reaching the store.
                if let Some((o, _, TokenState::Live)) = model.tokens.get(n).copied()
                    && model.registered[o]
                {
                    let owner = repo.owner(&oid(o)).await.unwrap().unwrap();
                    prop_assert!(owner.is_registered(), "o{} registered", o);
                    continue;
                }
                let got = repo.redeem_token(&hash(n), now).await.unwrap();
                let want = match model.tokens.get(n).copied() {
                    None => Err(TokenRejection::Unknown),
                    Some((_, _, TokenState::Pending)) => Err(TokenRejection::NotSent),
                    Some((_, _, TokenState::Revoked { .. })) => Err(TokenRejection::Revoked),
                    Some((_, _, TokenState::Redeemed { .. })) => Err(TokenRejection::AlreadyUsed),
                    Some((o, _, TokenState::Live)) if model.registered[o] => {
                        Err(TokenRejection::AlreadyUsed)
                    }
                    Some((o, _, TokenState::Live)) => Ok(o),
                };
                match (got, want) {
                    (RedeemOutcome::Rejected(got), Err(want)) => {
                        prop_assert_eq!(got, want, "redeem of token {}", n)
                    }
                    (RedeemOutcome::Redeemed { token }, Ok(o)) => {
                        let marked = repo
                            .mark_registered(&token.owner, &token.sent_to, now)
                            .await
                            .unwrap();
                        let Marked::Registered(owner) = marked else {
                            return Err(TestCaseError::fail(format!(
                                "o{o} not marked registered: {marked:?}"
                            )));
                        };
                        prop_assert_eq!(owner.registered, Some(Registered { at: Some(now) }));
                        model.revoke(o, now, |_, _| true);
                        model.tokens[n].2 = TokenState::Redeemed { at: now };
                        model.registered[o] = true;
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "redeem of token {n}: got {got:?}, the model says {want:?}"
                        )));
                    }
                }
            }
        }
        // Every token as the model has it; live tokens of one batch per owner.
        for (n, (o, b, want)) in model.tokens.iter().enumerate() {
            let got = repo.token(&hash(n)).await.unwrap().expect("a stored token");
            prop_assert_eq!(
                (&got.owner, &got.batch, got.state),
                (&oid(*o), &bid(*b), *want),
                "token {} after step {} ({:?})",
                n,
                i,
                op
            );
        }
        for o in 0..OWNERS {
            let mut live: Vec<usize> = model
                .tokens
                .iter()
                .filter(|(owner, _, s)| *owner == o && *s == TokenState::Live)
                .map(|(_, b, _)| *b)
                .collect();
            live.sort_unstable();
            live.dedup();
            prop_assert!(
                live.len() <= 1,
                "o{} has live links of batches {:?}",
                o,
                live
            );
        }
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn in_memory_links_follow_the_model(ops in prop::collection::vec(op(), 1..40)) {
        runtime().block_on(async {
            let repo = Arc::new(InMemoryRepository::new());
            run(repo.as_ref(), &ops).await
        })?;
    }
}

#[cfg(feature = "sqlite")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sqlite_links_follow_the_model(ops in prop::collection::vec(op(), 1..40)) {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let repo = owner_access::SqliteRepository::open(dir.path().join("links.db"))
                .await
                .unwrap();
            run(&repo, &ops).await
        })?;
    }
}
