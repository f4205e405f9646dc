//! The roster's access states (DESIGN.md's Manage screen: not invited, invited,
//! expired, registered) over two ports, checked against a reference model written
//! here: the owners in one directory, the workflow's state in a separate store, so
//! every state the roster shows comes from joining them. Random runs of sends (some
//! addresses refused by the server), clock moves and registrations by the host; after
//! each step the roster's rows, counts, Invited tab and the resend to the invited must
//! be the model's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use owner_access::adapters::memory::Fault;
use owner_access::domain::{
    AccessState, Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId, Timestamp,
};
use owner_access::eligibility::{AccessFilter, OwnerFilter};
use owner_access::prelude::*;
use owner_access::{InMemoryRepository, InMemoryTransport, ManualClock, OwnerAccess, Selection};
use proptest::prelude::*;

const OWNERS: usize = 6;
const TTL: u64 = 100;

#[derive(Debug, Clone)]
enum Step {
    /// A send to the picked owners; the server refuses the `refused` ones (550).
    Send {
        picks: Vec<usize>,
        refused: Vec<bool>,
    },
    /// The clock moves on.
    Advance(u64),
    /// The host marks an owner registered in its own records.
    Register(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (
            prop::collection::vec(0..OWNERS, 1..OWNERS),
            prop::collection::vec(any::<bool>(), OWNERS)
        )
            .prop_map(|(picks, refused)| Step::Send { picks, refused }),
        2 => (0..3 * TTL).prop_map(Step::Advance),
        1 => (0..OWNERS).prop_map(Step::Register),
    ]
}

/// Invitations accepted for an owner: (first, last, count, expires), in seconds.
type Invited = (i64, i64, u32, i64);

/// A roster row as compared: the state shown and the invitations.
type Row = (AccessState, Option<Invited>);

/// The model's owner: registered by the host or not, and the invitations accepted for
/// them.
#[derive(Debug, Clone, Default)]
struct Model {
    registered: bool,
    invited: Option<Invited>,
}

impl Model {
    fn state(&self, now: i64) -> AccessState {
        match self.invited {
            _ if self.registered => AccessState::Registered,
            None => AccessState::NotInvited,
            Some((_, _, _, expires)) if expires <= now => AccessState::Expired,
            Some(_) => AccessState::Invited,
        }
    }
}

fn id(i: usize) -> OwnerId {
    OwnerId::new(format!("o{i}")).unwrap()
}

fn address(i: usize) -> String {
    format!("o{i}@example.org")
}

fn owner(i: usize) -> Owner {
    Owner::new(
        id(i),
        CommunityId::new("c").unwrap(),
        PropertyId::new(format!("u{i}")).unwrap(),
        "Ann",
        format!("Lee{i}"),
    )
    .with_primary_email(address(i))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn check(service: &OwnerAccess, model: &[Model], now: i64) -> Result<(), TestCaseError> {
    let community = CommunityId::new("c").unwrap();
    let roster = service
        .roster(&community, &OwnerFilter::all())
        .await
        .unwrap();
    let got: BTreeMap<OwnerId, Row> = roster
        .rows
        .iter()
        .map(|r| {
            let invited = r.invitation.map(|i| {
                (
                    i.first_at.unix_seconds(),
                    i.last_at.unix_seconds(),
                    i.count,
                    i.expires_at.unix_seconds(),
                )
            });
            (r.owner.id.clone(), (r.state, invited))
        })
        .collect();
    let want: BTreeMap<OwnerId, Row> = model
        .iter()
        .enumerate()
        .map(|(i, m)| (id(i), (m.state(now), m.invited)))
        .collect();
    prop_assert_eq!(&got, &want);
    let count = |s: AccessState| model.iter().filter(|m| m.state(now) == s).count();
    let c = roster.counts;
    prop_assert_eq!(
        (c.not_invited, c.invited, c.expired, c.registered),
        (
            count(AccessState::NotInvited),
            count(AccessState::Invited),
            count(AccessState::Expired),
            count(AccessState::Registered)
        )
    );
    let invited: Vec<OwnerId> = (0..OWNERS)
        .filter(|&i| !model[i].registered && model[i].invited.is_some())
        .map(id)
        .collect();
    let tab = service
        .roster(
            &community,
            &OwnerFilter::all().with_access(AccessFilter::Invited),
        )
        .await
        .unwrap();
    let mut tab: Vec<OwnerId> = tab.rows.into_iter().map(|r| r.owner.id).collect();
    tab.sort();
    prop_assert_eq!(&tab, &invited, "the Invited tab");
    let resend = service.compose_resend_to_invited(&community).await.unwrap();
    let resend: Vec<OwnerId> = resend.selection.iter().cloned().collect();
    prop_assert_eq!(&resend, &invited, "the resend to the invited");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_roster_joins_the_directory_and_the_store_like_the_model(
        steps in prop::collection::vec(step(), 1..12),
    ) {
        runtime().block_on(async {
            let start = 1_000_000;
            let directory = Arc::new(InMemoryRepository::new());
            let community = CommunityId::new("c").unwrap();
            directory
                .upsert_community(&Community::new(community.clone(), "C"))
                .await
                .unwrap();
            let owners: Vec<Owner> = (0..OWNERS).map(owner).collect();
            directory
                .upsert_owners(&owners, Timestamp::from_unix_seconds(start))
                .await
                .unwrap();
            // The workflow's state in a store of its own: nothing is shared but ids.
            let store = Arc::new(InMemoryRepository::new());
            let transport = Arc::new(InMemoryTransport::new());
            let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(start)));
            let service = OwnerAccess::builder_with(directory.clone(), store, transport.clone())
                .sender("no-reply@example.com")
                .portal_url("https://portal.example.com/register")
                .token_ttl(Duration::from_secs(TTL))
                .clock(clock.clone())
                .build()
                .unwrap();
            let mut model = vec![Model::default(); OWNERS];
            let mut now = start;
            for step in &steps {
                match step {
                    Step::Send { picks, refused } => {
                        transport.clear_faults();
                        for (i, &no) in refused.iter().enumerate() {
                            if no {
                                let to = EmailAddress::parse(&address(i)).unwrap();
                                transport.fail_address(&to, Fault::Permanent);
                            }
                        }
                        let selection: Selection = picks.iter().map(|&i| id(i)).collect();
                        let invite = service.compose(&community, &selection).await.unwrap();
                        let review = service.review(&invite).await.unwrap();
                        service.send(review).await.unwrap();
                        let mut picked = picks.clone();
                        picked.sort_unstable();
                        picked.dedup();
                        for i in picked {
                            let m = &mut model[i];
                            if m.registered || refused[i] {
                                continue;
                            }
                            let expires = now + TTL as i64;
                            m.invited = Some(match m.invited {
                                None => (now, now, 1, expires),
                                Some((first, _, count, _)) => (first, now, count + 1, expires),
                            });
                        }
                    }
                    Step::Advance(by) => {
                        clock.advance(Duration::from_secs(*by));
                        now += *by as i64;
                    }
                    Step::Register(i) => {
                        directory
                            .upsert_owners(
                                &[owner(*i).with_registered(None)],
                                Timestamp::from_unix_seconds(now),
                            )
                            .await
                            .unwrap();
                        model[*i].registered = true;
                    }
                }
                check(&service, &model, now).await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
