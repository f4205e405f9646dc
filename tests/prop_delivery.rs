//! DESIGN.md rules 3 and 5 as properties, against a model written here: every eligible
//! selected owner gets their message, no ineligible one does; an owner gets a second
//! copy only when an accepted message's reply was lost, and then with the same
//! Message-ID; failures are exactly the owners whose faults outlast the retries.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::*;
use owner_access::Selection;
use owner_access::adapters::memory::Fault;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Plan {
    Clean,
    Transient(u32),
    Permanent,
    LostReply,
}

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![
        4 => Just(Plan::Clean),
        2 => (1u32..=4).prop_map(Plan::Transient),
        1 => Just(Plan::Permanent),
        1 => Just(Plan::LostReply),
    ]
}

/// (copies received, sent?) the model expects, with 3 attempts per delivery.
fn model(plan: Plan) -> (usize, bool) {
    match plan {
        Plan::Clean => (1, true),
        Plan::Transient(k) if k < 3 => (1, true),
        Plan::Transient(_) => (0, false),
        Plan::Permanent => (0, false),
        Plan::LostReply => (2, true),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn copies_and_outcomes_match_the_model(
        plans in prop::collection::vec(plan(), 1..16),
        extra in prop::collection::vec(prop::sample::select(vec!["none", "bad", "shared1", "shared2", "reg", "ghost"]), 0..4),
        concurrency in 1usize..6,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let options = owner_access::SendOptions { concurrency, ..fast_options() };
            let w = world_with(mixed_owners(plans.len()), options).await;
            for (i, p) in plans.iter().enumerate() {
                let a = addr(&format!("e{i}@example.org"));
                match p {
                    Plan::Clean => {}
                    Plan::Transient(k) => w.transport.fail_address_times(&a, Fault::Transient, *k),
                    Plan::Permanent => w.transport.fail_address(&a, Fault::Permanent),
                    Plan::LostReply => w.transport.fail_address_times(&a, Fault::LostReply, 1),
                }
            }
            let selection: Selection = (0..plans.len())
                .map(|i| oid(&format!("e{i}")))
                .chain(extra.iter().map(|s| oid(s)))
                .collect();
            let invite = w.service.compose(&w.community, &selection).await.unwrap();
            let report = w.service.send(w.service.review(&invite).await.unwrap()).await.unwrap();

            let mut ids_seen = HashSet::new();
            let failed: HashSet<String> = report.failed.iter().map(|f| f.owner.to_string()).collect();
            for (i, p) in plans.iter().enumerate() {
                let copies = w.transport.messages_to(&addr(&format!("e{i}@example.org")));
                let (want_copies, want_sent) = model(*p);
                prop_assert_eq!(copies.len(), want_copies, "owner e{} with {:?}", i, p);
                prop_assert_eq!(!failed.contains(&format!("e{i}")), want_sent);
                let ids: HashSet<_> = copies.iter().map(|c| c.message_id()).collect();
                prop_assert!(ids.len() <= 1, "copies of one owner's message share the Message-ID");
                if let Some(id) = ids.into_iter().next() {
                    prop_assert!(ids_seen.insert(id), "Message-IDs differ between owners");
                }
            }
            for name in ["none", "bad", "shared1", "shared2", "reg"] {
                let owner = w.repo_owner_email(name).await;
                if let Some(a) = owner {
                    prop_assert!(w.transport.messages_to(&a).is_empty(), "{} is not eligible", name);
                }
            }
            let sent_model = plans.iter().filter(|p| model(**p).1).count();
            prop_assert_eq!(report.sent, sent_model);
            prop_assert_eq!(report.pending, 0);
            let excluded: BTreeMap<String, &str> =
                report.excluded.iter().map(|e| (e.owner.to_string(), e.reason.code())).collect();
            for name in &extra {
                prop_assert!(excluded.contains_key(*name), "{} must be excluded", name);
            }
            Ok(())
        })?;
    }
}

trait OwnerEmail {
    async fn repo_owner_email(&self, id: &str) -> Option<owner_access::domain::EmailAddress>;
}

impl OwnerEmail for World {
    async fn repo_owner_email(&self, id: &str) -> Option<owner_access::domain::EmailAddress> {
        use owner_access::prelude::*;
        self.repo
            .owner(&oid(id))
            .await
            .unwrap()
            .and_then(|o| o.email_address())
    }
}
