//! Repository checks: the activity feed.

use crate::domain::{ActivityEntry, ActivityKind, DraftId, Page};
use crate::repository::OwnerStorage;

use super::fixtures::*;
use super::harness::*;

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
