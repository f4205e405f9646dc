//! DESIGN.md rule 6 for connection failures as a property, against a model written
//! here: over several runs of one batch, each with the server down or up and some
//! owners' messages making it drop the connection every time, an owner fails only when
//! a message got through after theirs in the same run, or in the third run in a row
//! that left them pending; a run stops (everything else pending) after three such
//! owners in a row, or when nothing got through after the last of them; nobody else
//! fails. One message at a time, so the order (by owner id) is the model's.

mod common;

use std::collections::BTreeSet;

use common::*;
use owner_access::adapters::memory::Fault;
use owner_access::domain::DeliveryState;
use owner_access::prelude::*;
use owner_access::{Selection, SendOptions, SendReport, StopReason, UNREACHABLE_RUNS};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Run {
    /// Nothing gets through.
    down: bool,
    /// Owners (by index) whose message makes the server drop the connection.
    poison: BTreeSet<usize>,
}

fn run_plan(owners: usize) -> impl Strategy<Value = Run> {
    (
        prop::bool::weighted(0.3),
        prop::collection::btree_set(0..owners, 0..=owners),
    )
        .prop_map(|(down, poison)| Run { down, poison })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Pending { runs: u32 },
    Sent,
    Failed,
}

/// One run of the model over `state`; whether it stopped.
fn model_run(state: &mut [Model], run: &Run, unreachable_after: usize) -> bool {
    let mut held: Vec<usize> = Vec::new();
    for i in 0..state.len() {
        let Model::Pending { runs } = state[i] else {
            continue;
        };
        if run.down || run.poison.contains(&i) {
            if runs + 1 >= UNREACHABLE_RUNS {
                state[i] = Model::Failed;
                continue;
            }
            held.push(i);
            if held.len() >= unreachable_after {
                break;
            }
        } else {
            for h in held.drain(..) {
                state[h] = Model::Failed;
            }
            state[i] = Model::Sent;
        }
    }
    let stopped = !held.is_empty();
    for h in held {
        if let Model::Pending { runs } = state[h] {
            state[h] = Model::Pending { runs: runs + 1 };
        }
    }
    stopped
}

fn name(i: usize) -> String {
    format!("e{i}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn connection_failures_fail_only_whom_the_model_fails(
        (owners, runs) in (1usize..=5).prop_flat_map(|n| {
            (Just(n), prop::collection::vec(run_plan(n), 1..=5))
        })
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let options = SendOptions { concurrency: 1, ..fast_options() };
            let w = world_with(mixed_owners(owners), options.clone()).await;
            let mut model = vec![Model::Pending { runs: 0 }; owners];
            let mut batch = None;
            for (n, run) in runs.iter().enumerate() {
                w.transport.clear_faults();
                if run.down {
                    w.transport.fail_all(Fault::Connection);
                }
                for i in &run.poison {
                    w.transport.fail_address(&addr(&format!("e{i}@example.org")), Fault::Connection);
                }
                let report: SendReport = match &batch {
                    None => {
                        let selection: Selection = (0..owners).map(|i| oid(&name(i))).collect();
                        let invite = w.service.compose(&w.community, &selection).await.unwrap();
                        w.service.send(w.service.review(&invite).await.unwrap()).await.unwrap()
                    }
                    Some(b) => w.service.resume(b).await.unwrap(),
                };
                batch = report.batch.clone();
                let stopped = model_run(&mut model, run, options.unreachable_after);
                prop_assert_eq!(
                    matches!(report.stopped, Some(StopReason::Unreachable { .. })),
                    stopped,
                    "run {}: {:?} / {:?}", n, report, model
                );
                let got: Vec<Model> = w.repo.deliveries(batch.as_ref().unwrap()).await.unwrap()
                    .into_iter()
                    .map(|d| match d.state {
                        DeliveryState::Pending => Model::Pending { runs: d.unreachable_runs },
                        DeliveryState::Sent { .. } => Model::Sent,
                        DeliveryState::Failed { .. } => Model::Failed,
                        other => panic!("left {other:?}"),
                    })
                    .collect();
                prop_assert_eq!(&got, &model, "run {}: {:?}", n, run);
                if model.iter().all(|m| !matches!(m, Model::Pending { .. })) {
                    break;
                }
            }
            Ok(())
        })?;
    }
}
