//! The directory checks: a host's `OwnerRepository` over its own schema.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::domain::{Community, Owner, Timestamp, delivered_key};
use crate::eligibility::{AccessFilter, EmailFilter, OwnerFilter};
use crate::repository::{Marked, OwnerRepository};

use super::fixtures::*;
use super::harness::*;

/// What a directory under test must hold when a check starts: the host's communities
/// and owners, which the suite's callback writes in the host's own schema (the suite
/// never writes owners itself). Owners are never invited in a seed (invitation history
/// is the store's); some are registered, as the host says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seed {
    /// The communities.
    pub communities: Vec<Community>,
    /// The owners, each of one of the communities.
    pub owners: Vec<Owner>,
}

/// Something that lends an [`OwnerRepository`]: a host's directory, or one boxed or
/// shared as a trait object.
pub trait AsDirectory: Send + Sync {
    /// The directory.
    fn as_directory(&self) -> &dyn OwnerRepository;
}

impl<T: OwnerRepository> AsDirectory for T {
    fn as_directory(&self) -> &dyn OwnerRepository {
        self
    }
}

impl AsDirectory for Box<dyn OwnerRepository> {
    fn as_directory(&self) -> &dyn OwnerRepository {
        &**self
    }
}

impl AsDirectory for Arc<dyn OwnerRepository> {
    fn as_directory(&self) -> &dyn OwnerRepository {
        &**self
    }
}

/// The pairs of the recipient-integrity rule: two spellings of one mailbox each.
pub const SAME_MAILBOX_PAIRS: [(&str, &str); 4] = [
    ("y@example.org", "y@ｅｘａｍｐｌｅ.org"),
    ("z@example.org", "z@exam\u{AD}ple.org"),
    ("x@bücher.example", "x@xn--bcher-kva.example"),
    ("\"q\"@example.org", "q@example.org"),
];

/// The seed of [`directory_reads`].
pub fn seed_directory_reads() -> Seed {
    Seed {
        communities: vec![
            Community::new(cid("c1"), "Oak HOA").with_reply_to(addr("board@oak.example.org")),
            Community::new(cid("c2"), "Elm HOA"),
        ],
        owners: vec![
            owner("a", "c1", Some("a@example.org")),
            owner("b", "c1", None),
            owner("r", "c1", Some("r@example.org")).with_registered(Some(t(-50))),
            owner("x", "c2", Some("x@example.org")),
        ],
    }
}

/// Reads: `community` (missing is `None`), `communities` lists each once, `owners`
/// leaves missing ids out, `community_owners` filters by access and email and a
/// missing community has no owners. Every owner reads back as seeded.
pub async fn directory_reads(dir: &dyn OwnerRepository) -> CheckResult {
    let c = Ctx("directory_reads");
    let seed = seed_directory_reads();
    c.eq(
        c.ok(dir.community(&cid("c1")).await, "community")?,
        Some(seed.communities[0].clone()),
        "community c1",
    )?;
    c.eq(
        c.ok(dir.community(&cid("nope")).await, "community")?,
        None,
        "a missing community",
    )?;
    let mut listed: Vec<String> = c
        .ok(dir.communities().await, "communities")?
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    listed.sort();
    c.eq(listed, names(&["c1", "c2"]), "communities")?;
    let mut got = c.ok(dir.owners(&[oid("a"), oid("zz"), oid("r")]).await, "owners")?;
    got.sort_by(|x, y| x.id.cmp(&y.id));
    c.eq(
        got,
        vec![seed.owners[0].clone(), seed.owners[2].clone()],
        "owners by id (a missing one left out)",
    )?;
    let filtered = |f: OwnerFilter| async move {
        let owners = c.ok(
            dir.community_owners(&cid("c1"), &f).await,
            "community_owners",
        )?;
        Ok::<_, Failure>(ids(&owners))
    };
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<String>>()
    };
    c.eq(
        filtered(OwnerFilter::all()).await?,
        set(&["a", "b", "r"]),
        "all of c1",
    )?;
    c.eq(
        filtered(OwnerFilter::unregistered_with_email()).await?,
        set(&["a"]),
        "unregistered with an email",
    )?;
    c.eq(
        filtered(OwnerFilter {
            access: AccessFilter::Registered,
            ..OwnerFilter::all()
        })
        .await?,
        set(&["r"]),
        "registered",
    )?;
    c.eq(
        filtered(OwnerFilter {
            email: EmailFilter::WithoutEmail,
            ..OwnerFilter::all()
        })
        .await?,
        set(&["b"]),
        "without an email",
    )?;
    c.eq(
        c.ok(
            dir.community_owners(&cid("nope"), &OwnerFilter::all())
                .await,
            "community_owners",
        )?,
        vec![],
        "owners of a missing community",
    )
}

/// The seed of [`directory_email_holders`]: owners `p0..p7` hold the two spellings of
/// each of [`SAME_MAILBOX_PAIRS`], `s` holds `solo@example.org`, `n` none, and `i` an
/// invalid address.
pub fn seed_directory_email_holders() -> Seed {
    let mut owners: Vec<Owner> = SAME_MAILBOX_PAIRS
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .enumerate()
        .map(|(i, e)| owner(&format!("p{i}"), "c1", Some(e)))
        .collect();
    owners.push(owner("s", "c1", Some("solo@example.org")));
    owners.push(owner("n", "c1", None));
    owners.push(owner("i", "c2", Some("not an address")));
    Seed {
        communities: vec![
            Community::new(cid("c1"), "Oak HOA"),
            Community::new(cid("c2"), "Elm HOA"),
        ],
        owners,
    }
}

/// `email_holders` finds the holders of a mailbox by `delivered_key`, whichever
/// spelling is asked and stored (the recipient-integrity pairs), across communities,
/// invalid addresses included; `shared_email_holders` keeps only keys held twice.
pub async fn directory_email_holders(dir: &dyn OwnerRepository) -> CheckResult {
    let c = Ctx("directory_email_holders");
    for (i, (a, b)) in SAME_MAILBOX_PAIRS.iter().enumerate() {
        for asked in [a, b] {
            let holders = c.ok(
                dir.email_holders(&[(*asked).to_owned()]).await,
                "email_holders",
            )?;
            let mut got: Vec<(String, String)> = holders
                .iter()
                .map(|h| (h.key.clone(), h.owner.to_string()))
                .collect();
            got.sort();
            let key = delivered_key(a);
            c.eq(
                got,
                vec![
                    (key.clone(), format!("p{}", 2 * i)),
                    (key, format!("p{}", 2 * i + 1)),
                ],
                &format!("holders of {asked:?}"),
            )?;
        }
    }
    let keys: Vec<String> = [
        "SOLO@example.org",
        "not an address",
        "nobody@example.org",
        "y@example.org",
    ]
    .map(String::from)
    .into();
    let mut got: Vec<String> = c
        .ok(dir.email_holders(&keys).await, "email_holders")?
        .into_iter()
        .map(|h| h.owner.to_string())
        .collect();
    got.sort();
    c.eq(
        got,
        names(&["i", "p0", "p1", "s"]),
        "holders of several keys",
    )?;
    let mut shared: Vec<String> = c
        .ok(
            dir.shared_email_holders(&keys).await,
            "shared_email_holders",
        )?
        .into_iter()
        .map(|h| h.owner.to_string())
        .collect();
    shared.sort();
    c.eq(shared, names(&["p0", "p1"]), "shared holders")
}

/// The seed of [`directory_update_emails`].
pub fn seed_directory_update_emails() -> Seed {
    Seed {
        communities: vec![
            Community::new(cid("c1"), "Oak HOA"),
            Community::new(cid("c2"), "Elm HOA"),
        ],
        owners: vec![
            owner("a", "c1", Some("a@example.org")),
            owner("b", "c2", Some("b@example.org")),
            owner("e", "c1", None),
            owner("s1", "c1", Some("shared@example.org")),
            owner("s2", "c1", Some("Shared@Example.org")),
        ],
    }
}

/// `update_emails`: all or nothing (`NotFound`, `Precondition` when a new address is
/// another owner's mailbox in any spelling, or given to two edited owners); applied,
/// it returns exactly the owners whose mailbox changed and stores the addresses as
/// given.
pub async fn directory_update_emails(dir: &dyn OwnerRepository) -> CheckResult {
    let c = Ctx("directory_update_emails");
    let seed = seed_directory_update_emails();
    let unchanged = |what: &'static str| async move {
        let mut got = c.ok(
            dir.owners(
                &seed_directory_update_emails()
                    .owners
                    .iter()
                    .map(|o| o.id.clone())
                    .collect::<Vec<_>>(),
            )
            .await,
            "owners",
        )?;
        got.sort_by(|x, y| x.id.cmp(&y.id));
        let mut want = seed_directory_update_emails().owners;
        want.sort_by(|x, y| x.id.cmp(&y.id));
        c.eq(got, want, what)
    };
    c.err(
        dir.update_emails(&[
            edit("a", Some("a3@example.org")),
            edit("zz", Some("z@example.org")),
        ])
        .await,
        "NotFound",
        is_not_found,
        "an edit of a missing owner",
    )?;
    unchanged("after an edit of a missing owner").await?;
    for spelling in [
        "b@ｅｘａｍｐｌｅ.org",
        "\"b\"@example.org",
        "b@exam\u{AD}ple.org",
        " B@EXAMPLE.org ",
    ] {
        c.err(
            dir.update_emails(&[edit("a", Some(spelling))]).await,
            "Precondition",
            is_precondition,
            "taking another owner's mailbox",
        )?;
        unchanged("after taking another owner's mailbox").await?;
    }
    c.err(
        dir.update_emails(&[
            edit("a", Some("new@bücher.example")),
            edit("e", Some("NEW@xn--bcher-kva.example")),
        ])
        .await,
        "Precondition",
        is_precondition,
        "one mailbox given to two edited owners",
    )?;
    unchanged("after giving one mailbox to two owners").await?;
    let changed = c.ok(
        dir.update_emails(&[
            edit("a", Some("a2@example.org")),
            edit("b", Some(" B@Example.org")),
            edit("e", Some("e@example.org")),
        ])
        .await,
        "update_emails",
    )?;
    c.eq(sorted(changed), names(&["a", "e"]), "changed owners")?;
    let mut got = c.ok(dir.owners(&[oid("a"), oid("b"), oid("e")]).await, "owners")?;
    got.sort_by(|x, y| x.id.cmp(&y.id));
    let emails: Vec<Option<String>> = got.into_iter().map(|o| o.primary_email).collect();
    c.eq(
        emails,
        vec![
            Some("a2@example.org".into()),
            Some(" B@Example.org".into()),
            Some("e@example.org".into()),
        ],
        "addresses after the edit",
    )?;
    // Swapping two addresses in one edit is not a conflict.
    c.ok(
        dir.update_emails(&[
            edit("a", Some("e@example.org")),
            edit("e", Some("a2@example.org")),
        ])
        .await,
        "update_emails (swap)",
    )?;
    let _ = seed;
    Ok(())
}

/// The seed of [`directory_mark_registered`].
pub fn seed_directory_mark_registered() -> Seed {
    Seed {
        communities: vec![Community::new(cid("c1"), "Oak HOA")],
        owners: vec![
            owner("a", "c1", Some("Ann@Example.org")),
            owner("b", "c1", Some("b@example.org")),
            owner("n", "c1", None),
            owner("y", "c1", Some("y@bücher.example")),
        ],
    }
}

/// `mark_registered`: registers at the given time while the owner's email is the
/// link's address (the same mailbox by `delivered_key`, however it is spelled),
/// refuses with `AddressChanged` otherwise (changing nothing), is idempotent, and
/// answers `UnknownOwner` for a missing owner.
pub async fn directory_mark_registered(dir: &dyn OwnerRepository) -> CheckResult {
    let c = Ctx("directory_mark_registered");
    let owners = seed_directory_mark_registered().owners;
    let mark = |o: &'static str, to: &'static str, at: Timestamp| async move {
        c.ok(
            dir.mark_registered(&oid(o), to, at).await,
            "mark_registered",
        )
    };
    for (o, to) in [
        ("b", "someone-else@example.org"),
        ("n", "n@example.org"),
        ("a", ""),
    ] {
        c.eq(
            mark(o, to, t(5)).await?,
            Marked::AddressChanged,
            "a link sent to another address",
        )?;
    }
    c.eq(
        mark("zz", "zz@example.org", t(5)).await?,
        Marked::UnknownOwner,
        "an unknown owner",
    )?;
    let mut got = c.ok(
        dir.owners(&owners.iter().map(|o| o.id.clone()).collect::<Vec<_>>())
            .await,
        "owners",
    )?;
    got.sort_by(|x, y| x.id.cmp(&y.id));
    c.eq(got, owners.clone(), "owners after refused marks")?;
    let registered =
        |o: &Owner, at| Marked::Registered(Box::new(o.clone().with_registered(Some(at))));
    c.eq(
        mark("a", " ann@EXAMPLE.org", t(6)).await?,
        registered(&owners[0], t(6)),
        "a link sent to another spelling of the owner's address",
    )?;
    c.eq(
        mark("a", "ann@example.org", t(9)).await?,
        registered(&owners[0], t(6)),
        "marking again (idempotent: the first time stays)",
    )?;
    c.eq(
        mark("y", "y@xn--bcher-kva.example", t(7)).await?,
        registered(&owners[3], t(7)),
        "a link sent to the A-label form of the owner's domain",
    )?;
    c.eq(
        c.ok(dir.owners(&[oid("a")]).await, "owners")?,
        vec![owners[0].clone().with_registered(Some(t(6)))],
        "the stored owner",
    )
}
