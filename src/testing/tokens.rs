//! Repository checks: issuing tokens and the messages they go out in.

use crate::domain::{
    DeliveryOutcome, DeliveryState, InvitationState, Owner, OwnerId, SkipReason, TokenRejection,
    TokenState,
};
use crate::repository::{OwnerStorage, RedeemOutcome};

use super::fixtures::*;
use super::harness::*;

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
    issue_each(
        c,
        repo,
        &[
            token(2, "a", "b1", t(5), t(1005)),
            token(3, "b", "b1", t(5), t(1005)),
        ],
    )
    .await?;
    c.eq(
        token_state(c, repo, 1).await?,
        TokenState::Live,
        "a's first token after a second of the same batch",
    )?;
    issue_each(c, repo, &[token(4, "a", "b2", t(10), t(1010))]).await?;
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
    let working =
        [(1, "a"), (3, "b"), (5, "c"), (8, "d")].map(|(n, o)| token(n, o, "b0", t(0), t(1000)));
    issue_each(c, repo, &working).await?;
    create_batch(c, repo, "b1", "c1", &people, t(1)).await?;
    claim(c, repo, "b1", &s, 4, t(10)).await?;
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
        record(
            c,
            repo,
            "b1",
            &s,
            &[
                (oid("a"), sent(t(1010), 1)),
                (oid("b"), failed("550 no such user", 1)),
            ],
            t(20),
        )
        .await?,
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
    claim(c, repo, "b1", &s, 4, t(30)).await?;
    c.ok(
        repo.issue_tokens(&[pending_token(7, "c", "b1", t(30), t(1030))])
            .await,
        "issue_tokens (pending)",
    )?;
    record(c, repo, "b1", &s, &[(oid("c"), sent(t(1030), 1))], t(35)).await?;
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
        record(
            c,
            repo,
            "b1",
            &sid("sender-x"),
            &[(oid("d"), sent(t(1010), 1))],
            t(36),
        )
        .await?,
        names(&["d"]),
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
        create_batch(c, repo, b, "c1", &["a"], at).await?;
        claim(c, repo, b, &s, 1, at).await?;
    }
    c.ok(
        repo.issue_tokens(&[
            pending_token(10, "a", "b2", t(40), t(1040)),
            pending_token(11, "a", "b3", t(41), t(1041)),
        ])
        .await,
        "issue_tokens (pending)",
    )?;
    record(c, repo, "b3", &s, &[(oid("a"), sent(t(1041), 1))], t(50)).await?;
    for (n, want, what) in [
        (11, TokenState::Live, "a's b3 token, recorded first"),
        (2, TokenState::Revoked { at: t(50) }, "a's b1 token"),
        (10, TokenState::Pending, "a's b2 token, not recorded yet"),
    ] {
        c.eq(token_state(c, repo, n).await?, want, what)?;
    }
    record(c, repo, "b2", &s, &[(oid("a"), sent(t(1040), 1))], t(60)).await?;
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
    create_batch(c, repo, "b0", "c1", &["o1"], t(0)).await?;
    create_batch(c, repo, "b1", "c1", &["o1", "o2", "o3"], t(1)).await?;
    // o1 holds a live link of an earlier batch and a pending one of this batch.
    issue_each(
        c,
        repo,
        &[
            token(1, "o1", "b0", t(0), t(5000)),
            pending_token(2, "o1", "b1", t(10), t(5000)),
        ],
    )
    .await?;
    let o1_before = get_owner(c, repo, "o1").await?;
    claim(c, repo, "b1", &a, 3, t(10)).await?;
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
        record(c, repo, "b1", &a, &group, t(20)).await?,
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
        claim(c, repo, "b1", &sid("sender-b"), 3, t(100)).await?,
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
    create_batch(c, repo, "b1", "c1", &["o1", "o2", "o3"], t(0)).await?;
    claim(c, repo, "b1", &a, 2, t(10)).await?;
    let group = vec![
        (oid("o1"), sent(t(1000), 1)),
        (oid("o3"), sent(t(1000), 1)),
        (oid("o2"), failed("550 no such user", 1)),
    ];
    c.eq(
        record(c, repo, "b1", &a, &group, t(20)).await?,
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
    create_batch(c, repo, "b1", "c1", &all, t(1)).await?;
    claim(c, repo, "b1", &a, 10, t(10)).await?;
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
        record(c, repo, "b1", &a, &group, t(20)).await?,
        Vec::new(),
        "nothing refused",
    )?;
    c.eq(
        record(c, repo, "b1", &b, &[(oid("o5"), sent(t(1000), 1))], t(21)).await?,
        names(&["o5"]),
        "a sent outcome from a sender without the claim is refused",
    )?;
    let first = InvitationState::after(None, t(20), t(1000));
    states(vec![("o1", first)], "after the first group").await?;
    create_batch(c, repo, "b2", "c1", &["o1", "o2"], t(30)).await?;
    claim(c, repo, "b2", &a, 10, t(40)).await?;
    c.eq(
        record(
            c,
            repo,
            "b2",
            &a,
            &[(oid("o1"), sent(t(2000), 1)), (oid("o2"), sent(t(3000), 1))],
            t(50),
        )
        .await?,
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
