//! Fixtures shared by the workflow tests: a community with the real mix of owners, a
//! service over the in-memory adapters and a manual clock.
#![allow(dead_code)]

pub mod capture;
pub mod paced;
pub mod wrapped;

use std::sync::Arc;
use std::time::Duration;

use owner_access::domain::{
    Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId, Timestamp,
};
use owner_access::eligibility::OwnerFilter;
use owner_access::prelude::*;
use owner_access::token::token_from_link;
use owner_access::{
    InMemoryRepository, InMemoryTransport, ManualClock, OwnerAccess, RetryPolicy, Selection,
    SendOptions, SendReport,
};

pub const PORTAL: &str = "https://portal.example.com/register";

pub struct World {
    pub repo: Arc<InMemoryRepository>,
    pub transport: Arc<InMemoryTransport>,
    pub clock: Arc<ManualClock>,
    pub service: OwnerAccess,
    pub community: CommunityId,
}

pub fn t0() -> Timestamp {
    Timestamp::from_unix_seconds(1_795_701_600)
}

pub fn oid(s: &str) -> OwnerId {
    OwnerId::new(s).unwrap()
}

pub fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

pub fn owner(id: &str, email: Option<&str>) -> Owner {
    let o = Owner::new(
        oid(id),
        CommunityId::new("c1").unwrap(),
        PropertyId::new(format!("unit-{id}")).unwrap(),
        format!("First{id}"),
        format!("Last{id}"),
    )
    .with_property_address(format!("{id} Elm Street"));
    match email {
        Some(e) => o.with_primary_email(e),
        None => o,
    }
}

/// Eligible owners `e0..e{n}` at `e{i}@example.org`, plus one of each kind of
/// ineligible owner: `none` (no email), `bad` (invalid), `shared1`/`shared2` (one
/// address), `reg` (registered).
pub fn mixed_owners(eligible: usize) -> Vec<Owner> {
    let mut owners: Vec<Owner> = (0..eligible)
        .map(|i| owner(&format!("e{i}"), Some(&format!("e{i}@example.org"))))
        .collect();
    owners.push(owner("none", None));
    owners.push(owner("bad", Some("not-an-address")));
    owners.push(owner("shared1", Some("family@example.org")));
    owners.push(owner("shared2", Some(" FAMILY@example.org ")));
    owners.push(owner("reg", Some("reg@example.org")).with_registered(None));
    owners
}

pub async fn world_with(owners: Vec<Owner>, options: SendOptions) -> World {
    let repo = Arc::new(InMemoryRepository::new());
    let transport = Arc::new(InMemoryTransport::new());
    let clock = Arc::new(ManualClock::new(t0()));
    let community = CommunityId::new("c1").unwrap();
    repo.upsert_community(
        &Community::new(community.clone(), "Maple Grove HOA")
            .with_reply_to(addr("board@maplegrove.example.org")),
    )
    .await
    .unwrap();
    repo.upsert_owners(&owners, t0()).await.unwrap();
    let service = OwnerAccess::builder(repo.clone(), transport.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .clock(clock.clone())
        .send_options(options)
        .build()
        .unwrap();
    World {
        repo,
        transport,
        clock,
        service,
        community,
    }
}

pub async fn world(eligible: usize) -> World {
    world_with(mixed_owners(eligible), fast_options()).await
}

pub fn fast_options() -> SendOptions {
    SendOptions {
        concurrency: 4,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        },
        ..SendOptions::default()
    }
}

/// The registration token in a message's text part, decoded with an independent
/// parser.
pub fn token_in(message: &[u8]) -> String {
    let text = text_part(message);
    token_from_link(&text)
        .expect("a registration link")
        .to_owned()
}

/// The decoded text/plain part.
pub fn text_part(message: &[u8]) -> String {
    let parsed = mailparse::parse_mail(message).expect("a parseable message");
    let mut stack = vec![parsed];
    while let Some(part) = stack.pop() {
        if part.ctype.mimetype == "text/plain" {
            return part.get_body().unwrap();
        }
        stack.extend(part.subparts);
    }
    panic!("no text/plain part");
}

/// Sends one batch to every row of the roster of unregistered owners with an address
/// (the ineligible ones are excluded by the review).
pub async fn send_to_all_eligible(w: &World) -> SendReport {
    let roster = w
        .service
        .roster(&w.community, &OwnerFilter::unregistered_with_email())
        .await
        .unwrap();
    let invite = w
        .service
        .compose(&w.community, &Selection::all_rows(&roster))
        .await
        .unwrap();
    let review = w.service.review(&invite).await.unwrap();
    w.service.send(review).await.unwrap()
}
