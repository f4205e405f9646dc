//! Repository checks: the mass edit (`update_emails`).

use std::collections::BTreeSet;

use crate::domain::TokenState;
use crate::repository::OwnerStorage;

use super::fixtures::*;
use super::harness::*;

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
    let live = [(1, "a"), (2, "b"), (3, "c")].map(|(n, o)| token(n, o, "b1", t(1), t(1000)));
    let pending = [(4, "a"), (5, "b")].map(|(n, o)| pending_token(n, o, "b2", t(2), t(1000)));
    issue_each(c, repo, &live).await?;
    issue_each(c, repo, &pending).await?;
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
    issue_each(c, repo, &[token(1, "a", "b1", t(1), t(1000))]).await?;
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
/// edit (the other spellings of its mailbox are
/// [`directory_update_emails`](super::directory_update_emails)'s), or
/// given to two edited owners, fails with `Precondition` and changes nothing (no
/// token revoked, no activity); addresses shared among unedited owners do not matter; two concurrent
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
    issue_each(c, repo, &[token(1, "a", "b1", t(1), t(1000))]).await?;
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
    // The other spellings of a held mailbox are the directory check's
    // (`directory_update_emails`), which the combined suite runs over this store too.
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
