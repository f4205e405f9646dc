//! Repository checks: creating batches.

use crate::domain::{Delivery, DeliveryCounts, DeliveryState};
use crate::repository::OwnerStorage;

use super::fixtures::*;
use super::harness::*;

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
    create_batch(c, repo, "b2", "c1", &["o1"], t(10)).await?;
    create_batch(c, repo, "b0", "c1", &["o1"], t(-10)).await?;
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
    let claimed = claim(c, repo, "b1", &sid("a"), 1, t(1)).await?;
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
