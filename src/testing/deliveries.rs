//! Repository checks: recording and releasing deliveries.

use crate::domain::{DeliveryCounts, DeliveryOutcome, DeliveryState, InvitationState};
use crate::repository::{InvitationStoreExt, OwnerStorage};

use super::fixtures::*;
use super::harness::*;

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
    create_batch(c, repo, "b1", "c1", &["o1", "o2", "o3"], t(0)).await?;
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
    claim(c, repo, "b1", &a, 10, t(10)).await?;
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
    let again = claim(c, repo, "b1", &a, 10, t(30)).await?;
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
    create_batch(c, repo, "b1", "c1", &["o1", "o2"], t(0)).await?;
    claim(c, repo, "b1", &a, 2, t(10)).await?;
    let refused = record(c, repo, "b1", &b, &[(oid("o1"), unreachable(3))], t(11)).await?;
    c.eq(refused, names(&["o1"]), "refused: not the holder")?;
    c.eq(
        delivery(c, repo, "b1", "o1").await?.unreachable_runs,
        0,
        "a refused outcome counts nothing",
    )?;
    let refused = record(
        c,
        repo,
        "b1",
        &a,
        &[(oid("o1"), unreachable(3)), (oid("o2"), sent(t(1000), 1))],
        t(12),
    )
    .await?;
    c.eq(refused, names(&[]), "nothing refused")?;
    let o1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (o1.state, o1.attempts, o1.unreachable_runs),
        (DeliveryState::Pending, 3, 1),
        "pending again, attempts added, one unreachable run",
    )?;
    // A later run claims it with its count, and leaves it pending once more.
    let claimed = claim(c, repo, "b1", &b, 2, t(20)).await?;
    c.eq(
        claimed
            .iter()
            .map(|d| (d.owner.to_string(), d.unreachable_runs))
            .collect::<Vec<_>>(),
        vec![("o1".to_owned(), 1)],
        "the claim returns the count",
    )?;
    record(c, repo, "b1", &b, &[(oid("o1"), unreachable(2))], t(21)).await?;
    let o1 = delivery(c, repo, "b1", "o1").await?;
    c.eq(
        (o1.attempts, o1.unreachable_runs),
        (5, 2),
        "the count grows run after run",
    )?;
    claim(c, repo, "b1", &a, 2, t(30)).await?;
    record(
        c,
        repo,
        "b1",
        &a,
        &[(oid("o1"), failed("no connection", 1))],
        t(31),
    )
    .await?;
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
    create_batch(c, repo, "b1", "c1", &["o1", "o2", "o3", "o4", "o5"], t(0)).await?;
    claim(c, repo, "b1", &a, 3, t(10)).await?;
    claim(c, repo, "b1", &b, 1, t(10)).await?;
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
