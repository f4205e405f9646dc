//! Repository checks: redeeming tokens and the registrations they owe.

use futures::future::join_all;

use crate::domain::{
    ActivityEntry, ActivityKind, Owner, Timestamp, TokenRecord, TokenRejection, TokenState,
};
use crate::repository::{OwedRegistration, OwnerStorage, RedeemOutcome};

use super::fixtures::*;
use super::harness::*;

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
    issue_each(
        c,
        repo,
        &[
            token(1, "a", "b1", t(0), t(100)),
            token(2, "b", "b1", t(0), t(1000)),
            token(3, "b", "b2", t(1), t(1000)),
            token(5, "d", "b1", t(0), t(1000)),
            token(6, "d", "b1", t(2), t(1000)),
        ],
    )
    .await?;
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
    issue_each(c, repo, &[pending_token(7, "b", "b3", t(61), t(1000))]).await?;
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
        issue_each(c, repo, &[token(n, o.id.as_str(), "b1", t(0), t(1000))]).await?;
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
    issue_each(
        c,
        repo,
        &[
            token(1, "a", "b1", t(0), t(1000)),
            pending_token(2, "a", "b2", t(1), t(1000)),
            token(3, "b", "b1", t(0), t(1000)),
            token(4, "c", "b1", t(0), t(1000)),
        ],
    )
    .await?;
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
        issue_each(c, repo, &[token(n, &format!("o{n}"), "b1", t(0), t(1000))]).await?;
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
        issue_each(c, repo, &[token(n, &format!("o{n}"), "b1", t(0), t(1000))]).await?;
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
