//! Repository checks: communities and owners (upserts, imports, filters, holders).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::domain::{Community, Owner, OwnerId, TokenState};
use crate::eligibility::{AccessFilter, EmailFilter, OwnerFilter};
use crate::repository::{OwnerRepositoryExt, OwnerStorage, RepositoryError};

use super::fixtures::*;
use super::harness::*;

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
    issue_each(
        c,
        repo,
        &[
            token(1, "a", "b1", t(1), t(1000)),
            token(2, "b", "b1", t(1), t(1000)),
            pending_token(3, "a", "b2", t(2), t(1000)),
        ],
    )
    .await?;
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
    issue_each(c, repo, &[token(1, "moving", "b1", t(1), t(1000))]).await?;
    let imported = Community::new(cid("imported"), "Imported HOA");
    let chunk = |ids: std::ops::Range<usize>| -> Vec<Owner> {
        ids.map(|i| {
            owner(
                &format!("i{i:02}"),
                "imported",
                Some(&format!("i{i}@example.org")),
            )
        })
        .collect()
    };
    let first = chunk(0..60);
    let mut second = chunk(60..120);
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

    // A session at t(30) that has the community and the first chunk.
    let begin_with_first_chunk = || async {
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
        Ok::<_, Failure>(session)
    };

    // Dropped without a commit: nothing is kept.
    drop(begin_with_first_chunk().await?);
    c.eq(visible().await?, (false, 0), "after a dropped session")?;

    let mut session = begin_with_first_chunk().await?;
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
/// [`delivered_key`](crate::domain::delivered_key) (fullwidth letters, a soft hyphen,
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
