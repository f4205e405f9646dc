//! DESIGN.md rule 1 and 2, checked against a reference model written here, independently
//! of the crate's code: its own normalisation (trim + ASCII lower-case), its own notion
//! of validity (the generator knows which addresses it made invalid), its own order of
//! reasons.

use std::collections::BTreeMap;
use std::sync::Arc;

use owner_access::FileOutbox;
use owner_access::domain::{Community, CommunityId, Owner, OwnerId, PropertyId, Timestamp};
use owner_access::eligibility::OwnerFilter;
use owner_access::prelude::*;
use owner_access::{InMemoryRepository, OwnerAccess, Selection};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Email {
    None,
    Blank,
    Valid {
        local: usize,
        domain: usize,
        upper: bool,
        pad: bool,
    },
    Invalid(usize),
}

const LOCALS: [&str; 3] = ["ann", "bo.b", "cy+hoa"];
const DOMAINS: [&str; 2] = ["example.org", "mail.example.net"];
const INVALID: [&str; 5] = [
    "ann.example.org",
    "ann@localhost",
    "ann@@example.org",
    "@example.org",
    "a b@example.org",
];

impl Email {
    fn raw(&self) -> Option<String> {
        match self {
            Email::None => None,
            Email::Blank => Some("   ".into()),
            Email::Valid {
                local,
                domain,
                upper,
                pad,
            } => {
                let s = format!("{}@{}", LOCALS[*local], DOMAINS[*domain]);
                let s = if *upper { s.to_uppercase() } else { s };
                Some(if *pad { format!("  {s} ") } else { s })
            }
            Email::Invalid(i) => Some(INVALID[*i].into()),
        }
    }
}

#[derive(Debug, Clone)]
struct Spec {
    other_community: bool,
    registered: bool,
    email: Email,
}

fn email() -> impl Strategy<Value = Email> {
    prop_oneof![
        1 => Just(Email::None),
        1 => Just(Email::Blank),
        6 => (0..LOCALS.len(), 0..DOMAINS.len(), any::<bool>(), any::<bool>())
            .prop_map(|(local, domain, upper, pad)| Email::Valid { local, domain, upper, pad }),
        2 => (0..INVALID.len()).prop_map(Email::Invalid),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        email(),
    )
        .prop_map(|(other_community, registered, email)| Spec {
            other_community,
            registered,
            email,
        })
}

/// The model: the reason code an owner gets, or None when eligible.
fn model_reason(
    specs: &[Spec],
    index: Option<usize>,
    community_of_selection: bool,
) -> Option<&'static str> {
    let Some(i) = index else {
        return Some("unknown_owner");
    };
    let me = &specs[i];
    if me.other_community && community_of_selection {
        return Some("unknown_owner");
    }
    if me.registered {
        return Some("registered");
    }
    let key = |s: &Spec| {
        s.email
            .raw()
            .map(|r| r.trim().to_ascii_lowercase())
            .filter(|k| !k.is_empty())
    };
    let Some(mine) = key(me) else {
        return Some("no_email");
    };
    if matches!(me.email, Email::Invalid(_)) {
        return Some("invalid_email");
    }
    let shared = specs
        .iter()
        .enumerate()
        .any(|(j, other)| j != i && key(other).as_deref() == Some(mine.as_str()));
    if shared { Some("shared_email") } else { None }
}

fn id(i: usize) -> OwnerId {
    OwnerId::new(format!("o{i:03}")).unwrap()
}

async fn setup(specs: &[Spec]) -> (OwnerAccess, CommunityId) {
    let repo = Arc::new(InMemoryRepository::new());
    let here = CommunityId::new("here").unwrap();
    let there = CommunityId::new("there").unwrap();
    repo.upsert_community(&Community::new(here.clone(), "Here"))
        .await
        .unwrap();
    repo.upsert_community(&Community::new(there.clone(), "There"))
        .await
        .unwrap();
    let owners: Vec<Owner> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let community = if s.other_community {
                there.clone()
            } else {
                here.clone()
            };
            let mut o = Owner::new(
                id(i),
                community,
                PropertyId::new(format!("p{i}")).unwrap(),
                "F",
                "L",
            );
            o.primary_email = s.email.raw();
            if s.registered {
                o.registered = Some(owner_access::domain::Registered { at: None });
            }
            o
        })
        .collect();
    repo.upsert_owners(&owners, Timestamp::from_unix_seconds(0))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join("owner-access-prop-unused");
    let service = OwnerAccess::builder(repo, Arc::new(FileOutbox::new(dir).unwrap()))
        .sender("no-reply@example.com")
        .portal_url("https://portal.example.com/register")
        .build()
        .unwrap();
    (service, here)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every roster row carries exactly the model's reason (rule 1).
    #[test]
    fn roster_eligibility_matches_the_model(specs in prop::collection::vec(spec(), 1..40)) {
        runtime().block_on(async {
            let (service, here) = setup(&specs).await;
            let roster = service.roster(&here, &OwnerFilter::all()).await.unwrap();
            let got: BTreeMap<OwnerId, Option<&str>> = roster
                .rows
                .iter()
                .map(|r| (r.owner.id.clone(), r.eligibility.reason().map(|x| x.code())))
                .collect();
            let want: BTreeMap<OwnerId, Option<&str>> = specs
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.other_community)
                .map(|(i, _)| (id(i), model_reason(&specs, Some(i), false)))
                .collect();
            prop_assert_eq!(got, want);
            Ok(())
        })?;
    }

    /// A review of any selection (with unknown ids and owners of another community)
    /// lists exactly the model's eligible owners as recipients and every other one as
    /// excluded with the model's reason (rule 2).
    #[test]
    fn review_splits_selection_like_the_model(
        specs in prop::collection::vec(spec(), 1..30),
        picks in prop::collection::vec(0usize..40, 0..30),
    ) {
        runtime().block_on(async {
            let (service, here) = setup(&specs).await;
            let selection: Selection = picks.iter().map(|&i| id(i)).collect();
            let invite = service.compose(&here, &selection).await.unwrap();
            let review = service.review(&invite).await.unwrap();
            let mut want_recipients = Vec::new();
            let mut want_excluded = BTreeMap::new();
            for owner in selection.iter() {
                let index = (0..specs.len()).find(|&i| &id(i) == owner);
                match model_reason(&specs, index, true) {
                    None => want_recipients.push(owner.clone()),
                    Some(code) => { want_excluded.insert(owner.clone(), code); }
                }
            }
            let got_recipients: Vec<OwnerId> = review.recipients.iter().map(|r| r.owner.clone()).collect();
            let got_excluded: BTreeMap<OwnerId, &str> =
                review.excluded.iter().map(|e| (e.owner.clone(), e.reason.code())).collect();
            prop_assert_eq!(got_recipients, want_recipients);
            prop_assert_eq!(got_excluded, want_excluded);
            Ok(())
        })?;
    }
}
