//! One mailbox, one owner (DESIGN rule 10): the pairs of addresses that were seen to
//! deliver two owners' links to one mailbox are `shared_email` at review (both owners
//! excluded, each naming the other's property) and refused by mass edit, on the
//! in-memory repository and on a real SQLite file. Nothing is sent to either owner of
//! a pair.
#![cfg(feature = "sqlite")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{PORTAL, t0};
use owner_access::adapters::sqlite::SqliteRepository;
use owner_access::domain::{Community, CommunityId, Owner, OwnerId, PropertyId};
use owner_access::eligibility::{Ineligible, OwnerFilter};
use owner_access::error::MassEditProblem;
use owner_access::prelude::*;
use owner_access::repository::EmailEdit;
use owner_access::{Error, InMemoryRepository, InMemoryTransport, OwnerAccess, Selection};

/// The pairs from the report: each delivers to one mailbox.
const PAIRS: [(&str, &str); 4] = [
    ("y@example.org", "y@ｅｘａｍｐｌｅ.org"),
    ("z@example.org", "z@exam\u{AD}ple.org"),
    ("x@bücher.example", "x@xn--bcher-kva.example"),
    ("\"q\"@example.org", "q@example.org"),
];

fn owner(i: usize, email: &str) -> Owner {
    Owner::new(
        OwnerId::new(format!("o{i}")).unwrap(),
        CommunityId::new("c1").unwrap(),
        PropertyId::new(format!("unit-{i}")).unwrap(),
        format!("F{i}"),
        format!("L{i}"),
    )
    .with_primary_email(email)
}

/// Owners `o0..o7` hold the pairs (o0/o1, o2/o3, ...); `o8` holds `a@example.org`,
/// `o9` has no address yet.
fn owners() -> Vec<Owner> {
    let mut owners: Vec<Owner> = PAIRS
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .enumerate()
        .map(|(i, e)| owner(i, e))
        .collect();
    owners.push(owner(8, "a@example.org"));
    owners.push(Owner {
        primary_email: None,
        ..owner(9, "")
    });
    owners
}

async fn service_over(repo: Arc<dyn OwnerStorage>) -> (OwnerAccess, Arc<InMemoryTransport>) {
    repo.upsert_community(&Community::new(CommunityId::new("c1").unwrap(), "Maple"))
        .await
        .unwrap();
    repo.upsert_owners(&owners(), t0()).await.unwrap();
    let transport = Arc::new(InMemoryTransport::new());
    let service = OwnerAccess::builder(repo, transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .build()
        .unwrap();
    (service, transport)
}

async fn check_pairs_are_shared(repo: Arc<dyn OwnerStorage>) {
    let (service, transport) = service_over(repo).await;
    let community = CommunityId::new("c1").unwrap();
    let selection: Selection = (0..9)
        .map(|i| OwnerId::new(format!("o{i}")).unwrap())
        .collect();
    let invite = service.compose(&community, &selection).await.unwrap();
    let review = service.review(&invite).await.unwrap();
    let excluded: BTreeMap<String, Ineligible> = review
        .excluded
        .iter()
        .map(|e| (e.owner.to_string(), e.reason.clone()))
        .collect();
    for i in 0..8 {
        let partner = i ^ 1;
        assert_eq!(
            excluded.get(&format!("o{i}")),
            Some(&Ineligible::SharedEmail {
                with: vec![PropertyId::new(format!("unit-{partner}")).unwrap()]
            }),
            "o{i} ({:?})",
            owners()[i].primary_email
        );
    }
    let recipients: Vec<&str> = review.recipients.iter().map(|r| r.owner.as_str()).collect();
    assert_eq!(recipients, ["o8"]);
    // The roster says the same.
    let roster = service
        .roster(&community, &OwnerFilter::all())
        .await
        .unwrap();
    let shared = roster
        .rows
        .iter()
        .filter(|r| r.eligibility.reason().map(Ineligible::code) == Some("shared_email"))
        .count();
    assert_eq!(shared, 8);
    // And only o8 is sent to.
    let report = service.send(review).await.unwrap();
    assert_eq!(report.sent, 1);
    let sent: Vec<String> = transport
        .messages()
        .iter()
        .map(|m| m.envelope.to.smtp_form().to_owned())
        .collect();
    assert_eq!(sent, ["a@example.org"]);
}

async fn check_mass_edit_refuses_the_same_mailbox(repo: Arc<dyn OwnerStorage>) {
    let (service, _) = service_over(repo.clone()).await;
    let community = CommunityId::new("c1").unwrap();
    for taken in [
        "a@ｅxample.org",
        "A@EXAMPLE.ORG",
        "\"a\"@example.org",
        "a@exam\u{AD}ple.org",
    ] {
        let edits = [EmailEdit {
            owner: OwnerId::new("o9").unwrap(),
            email: Some(taken.into()),
        }];
        let err = service
            .mass_edit_emails(&community, &edits)
            .await
            .unwrap_err();
        let Error::MassEditRejected { problems } = err else {
            panic!("{taken}: {err:?}");
        };
        assert_eq!(
            problems,
            vec![MassEditProblem::SharedEmail {
                owner: OwnerId::new("o9").unwrap(),
                email: taken.into(),
                with: vec![OwnerId::new("o8").unwrap()],
            }],
            "{taken}"
        );
        let o9 = repo
            .owner(&OwnerId::new("o9").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o9.primary_email, None, "nothing changed after {taken}");
        // The directory refuses it too, whoever calls it.
        let direct = repo.update_emails(&edits).await;
        assert!(
            matches!(
                direct,
                Err(owner_access::repository::RepositoryError::Precondition { .. })
            ),
            "{taken}: {direct:?}"
        );
    }
    // Two edited owners given one mailbox in two spellings.
    let edits = [
        EmailEdit {
            owner: OwnerId::new("o9").unwrap(),
            email: Some("new@bücher.example".into()),
        },
        EmailEdit {
            owner: OwnerId::new("o8").unwrap(),
            email: Some("NEW@xn--bcher-kva.example".into()),
        },
    ];
    let err = service
        .mass_edit_emails(&community, &edits)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::MassEditRejected { problems } if problems.len() == 2),
        "{err:?}"
    );
}

#[tokio::test]
async fn pairs_that_share_a_mailbox_are_shared_in_memory() {
    check_pairs_are_shared(Arc::new(InMemoryRepository::new())).await;
}

#[tokio::test]
async fn pairs_that_share_a_mailbox_are_shared_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let repo = SqliteRepository::open(dir.path().join("pairs.db"))
        .await
        .unwrap();
    check_pairs_are_shared(Arc::new(repo)).await;
}

#[tokio::test]
async fn mass_edit_refuses_another_spelling_of_a_held_mailbox_in_memory() {
    check_mass_edit_refuses_the_same_mailbox(Arc::new(InMemoryRepository::new())).await;
}

#[tokio::test]
async fn mass_edit_refuses_another_spelling_of_a_held_mailbox_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let repo = SqliteRepository::open(dir.path().join("edit.db"))
        .await
        .unwrap();
    check_mass_edit_refuses_the_same_mailbox(Arc::new(repo)).await;
}
