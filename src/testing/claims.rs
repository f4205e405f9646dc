//! Repository checks: claims and leases on deliveries.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;

use crate::domain::{DeliveryCounts, DeliveryState, InvitationState, OwnerId};
use crate::repository::{
    ClaimHolder, HeldClaims, InvitationStoreExt, OwnerStorage, RepositoryError,
};

use super::fixtures::*;
use super::harness::*;

/// `claim_deliveries`: respects the limit; run-out leases first (oldest first), then
/// pending deliveries by owner id;
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
    create_batch(c, repo, "b1", "c1", &owners, t(0)).await?;
    let first = claim(c, repo, "b1", &a, 2, t(10)).await?;
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
    let second = claim(c, repo, "b1", &b, 10, t(11)).await?;
    c.eq(sorted_owners(&second), vec!["o3", "o4", "o5"], "the rest")?;
    for (sender, name) in [(&a, "its holder"), (&b, "another sender")] {
        let none = claim(c, repo, "b1", sender, 10, t(39)).await?;
        c.eq(
            sorted_owners(&none),
            Vec::<&str>::new(),
            &format!("leases that still run are not taken by {name}"),
        )?;
    }
    let taken = claim(c, repo, "b1", &b, 10, t(40)).await?;
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
        record(c, repo, "b1", &b, &[(oid("o3"), sent(t(5000), 1))], t(41)).await?,
        vec![],
        "refused",
    )?;
    let rest = claim(c, repo, "b1", &a, 10, t(200)).await?;
    c.eq(
        sorted_owners(&rest),
        vec!["o1", "o2", "o4", "o5"],
        "every lease ran out; the sent delivery is not claimable",
    )?;
    // Run-out leases come before pending deliveries, the oldest first.
    create_batch(c, repo, "b2", "c1", &["p1", "p2", "p3", "p4"], t(0)).await?;
    c.eq(
        sorted_owners(&claim(c, repo, "b2", &a, 1, t(0)).await?),
        vec!["p1"],
        "pending deliveries by owner",
    )?;
    c.eq(
        sorted_owners(&claim(c, repo, "b2", &a, 1, t(1)).await?),
        vec!["p2"],
        "the next pending one",
    )?;
    let run_out_first = claim(c, repo, "b2", &b, 1, t(100)).await?;
    c.eq(
        sorted_owners(&run_out_first),
        vec!["p1"],
        "the oldest run-out lease before the others and before pending deliveries",
    )?;
    let then_pending = claim(c, repo, "b2", &b, 2, t(100)).await?;
    c.eq(
        sorted_owners(&then_pending),
        vec!["p2", "p3"],
        "run-out leases, then pending deliveries by owner",
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
    create_batch(c, repo, "b1", "c1", &refs, t(0)).await?;
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
    create_batch(c, repo, "b1", "c1", &["o1", "o2", "o3", "o4", "o5"], t(0)).await?;
    claim(c, repo, "b1", &a, 3, t(0)).await?;
    claim(c, repo, "b1", &b, 1, t(0)).await?;
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
    let at_old_end = claim(c, repo, "b1", &b, 10, t(30)).await?;
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
    let later = claim(c, repo, "b1", &b, 10, t(60)).await?;
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
    record(c, repo, "b1", &a, &[(oid("o1"), sent(t(5000), 1))], t(62)).await?;
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
    create_batch(c, repo, "b1", "c1", &["o1", "o2", "o3"], t(0)).await?;
    claim(c, repo, "b1", &a, 3, t(0)).await?;
    let taken = claim(c, repo, "b1", &b, 2, t(30)).await?;
    c.eq(sorted_owners(&taken), vec!["o1", "o2"], "taken over")?;
    // a wakes up: one of its outcomes is refused, the other (o3: its lease ran out
    // but nobody took it) counts.
    let refused = record(
        c,
        repo,
        "b1",
        &a,
        &[
            (oid("o1"), sent(t(1000), 1)),
            (oid("o3"), failed("550 no such user", 1)),
        ],
        t(31),
    )
    .await?;
    c.eq(refused, names(&["o1"]), "refused outcomes")?;
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
        record(c, repo, "b1", &b, &[(oid("o1"), sent(t(1000), 2))], t(32)).await?,
        vec![],
        "the new holder's outcome is refused",
    )?;
    for (sender, name) in [(&a, "the former holder"), (&b, "the holder, again")] {
        c.eq(
            record(
                c,
                repo,
                "b1",
                sender,
                &[(oid("o1"), failed("late", 1))],
                t(33),
            )
            .await?,
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
    create_batch(c, repo, "b1", "c1", &["o1", "o2", "o3", "o4", "o5"], t(0)).await?;
    c.eq(
        c.ok(repo.held_claims(&bid("b1"), t(1)).await, "held_claims")?,
        HeldClaims {
            now: t(1),
            holders: vec![],
        },
        "nobody holds anything",
    )?;
    claim(c, repo, "b1", &a, 2, t(0)).await?;
    c.ok(
        repo.renew_claims(&bid("b1"), &a, &[oid("o2")], LEASE, t(10))
            .await,
        "renew_claims",
    )?;
    claim(c, repo, "b1", &b, 1, t(5)).await?;
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
        record(c, repo, "b1", &a, &[(oid("o1"), sent(t(1000), 1))], t(14)).await?,
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
    create_batch(c, repo, "b1", "c1", &refs, t(0)).await?;
    claim(c, repo, "b1", &a, 60, t(0)).await?;
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
