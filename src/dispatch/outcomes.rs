//! Outcomes are recorded in groups: a run gathers them, records a group in one
//! repository call while the next messages go out, reports each outcome's event once
//! its group is committed (not those of deliveries another sender took over), and
//! keeps a tally for the report the store may not be able to give.

use std::collections::{HashSet, VecDeque};

use tokio::time::Instant;

use crate::domain::{BatchId, DeliveryOutcome, OwnerId, SenderId, SkipReason};
use crate::progress::Progress;
use crate::repository::RepositoryError;

use super::Engine;
use super::claims::Ready;
use super::deliver::Unreachable;
use super::stop::RunState;

/// Outcomes waiting to be recorded in one repository call.
#[derive(Default)]
pub(super) struct Outcomes {
    pub(super) items: Vec<(OwnerId, DeliveryOutcome)>,
    /// The event of each item, reported once it is recorded.
    pub(super) events: Vec<Option<Progress>>,
    pub(super) since: Option<Instant>,
}

impl Outcomes {
    pub(super) fn push(&mut self, owner: OwnerId, outcome: DeliveryOutcome) {
        let event = match &outcome {
            DeliveryOutcome::Sent { .. } => Some(Progress::Sent {
                owner: owner.clone(),
            }),
            DeliveryOutcome::Failed { error, .. } => Some(Progress::Failed {
                owner: owner.clone(),
                error: error.clone(),
            }),
            DeliveryOutcome::Unreachable { .. } => None,
            DeliveryOutcome::Skipped { reason } => Some(Progress::Skipped {
                owner: owner.clone(),
                reason: *reason,
            }),
        };
        self.since.get_or_insert_with(Instant::now);
        self.items.push((owner, outcome));
        self.events.push(event);
    }

    pub(super) fn failed(&mut self, owner: OwnerId, error: String, attempts: u32) {
        self.push(owner, DeliveryOutcome::Failed { error, attempts });
    }

    pub(super) fn skipped(&mut self, owner: OwnerId, reason: SkipReason) {
        self.push(owner, DeliveryOutcome::Skipped { reason });
    }

    /// Puts a group whose recording failed back in front, to be tried again.
    pub(super) fn put_back(&mut self, group: Outcomes) {
        let Outcomes {
            mut items,
            mut events,
            since,
        } = group;
        items.append(&mut self.items);
        events.append(&mut self.events);
        self.items = items;
        self.events = events;
        self.since = since.or(self.since).or_else(|| Some(Instant::now()));
    }

    /// Takes the waiting group, leaving this one empty.
    pub(super) fn take(&mut self) -> Outcomes {
        std::mem::take(self)
    }
}

/// A group of outcomes after its repository call.
pub(super) struct Recorded {
    pub(super) group: Outcomes,
    /// The owners the repository refused: another sender holds them now.
    pub(super) result: Result<Vec<OwnerId>, RepositoryError>,
}

/// What became of this run's outcomes: what its report says when the store cannot be
/// read at the end.
#[derive(Default)]
pub(super) struct Tally {
    /// Sent outcomes the store recorded.
    pub(super) recorded_sent: usize,
    /// Failed outcomes the store recorded, with their errors.
    pub(super) recorded_failed: Vec<(OwnerId, String)>,
    /// Skipped outcomes the store recorded.
    pub(super) recorded_skipped: usize,
    /// Sent outcomes the store did not take (its call failed): these messages went
    /// out, and `resume` sends them again with the same Message-ID.
    pub(super) unrecorded_sent: usize,
}

impl Engine<'_> {
    /// Held connection failures become failures: the run went on, so the server was
    /// reachable after all and these owners had their retries.
    pub(super) fn give_up_held(held: &mut Vec<Unreachable>, outcomes: &mut Outcomes) {
        for h in held.drain(..) {
            outcomes.failed(h.owner, h.error, h.attempts);
        }
    }

    /// Records a group of outcomes in one repository call; their events are reported
    /// once it is committed.
    pub(super) async fn record(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        group: Outcomes,
    ) -> Recorded {
        let result = self
            .repo
            .record_deliveries(batch, sender, &group.items, self.clock.now())
            .await;
        Recorded { group, result }
    }

    /// Records the waiting outcomes now, then reports them.
    pub(super) async fn flush(
        &self,
        batch: &BatchId,
        sender: &SenderId,
        outcomes: &mut Outcomes,
        holding: &mut HashSet<OwnerId>,
        queue: &mut VecDeque<Ready>,
        state: &RunState,
    ) {
        if outcomes.items.is_empty() {
            return;
        }
        let recorded = self.record(batch, sender, outcomes.take()).await;
        for (owner, _) in &recorded.group.items {
            holding.remove(owner);
        }
        self.report(recorded, holding, queue, state);
    }

    /// Reports a recorded group's events, except those of the deliveries another
    /// sender took over (their outcome did not count); or stops the run on the
    /// repository's error.
    pub(super) fn report(
        &self,
        recorded: Recorded,
        holding: &mut HashSet<OwnerId>,
        queue: &mut VecDeque<Ready>,
        state: &RunState,
    ) {
        let mut tally = state.tally.lock().expect("run state");
        match recorded.result {
            Ok(refused) => {
                let refused_set: HashSet<&OwnerId> = refused.iter().collect();
                for ((owner, outcome), event) in
                    recorded.group.items.iter().zip(recorded.group.events)
                {
                    if refused_set.contains(owner) {
                        continue;
                    }
                    match outcome {
                        DeliveryOutcome::Sent { .. } => tally.recorded_sent += 1,
                        DeliveryOutcome::Failed { error, .. } => {
                            tally.recorded_failed.push((owner.clone(), error.clone()));
                        }
                        DeliveryOutcome::Skipped { .. } => tally.recorded_skipped += 1,
                        DeliveryOutcome::Unreachable { .. } => {}
                    }
                    if let Some(event) = event {
                        self.control.emit(event);
                    }
                }
                drop(tally);
                self.lose(refused, "outcome", holding, queue, state);
            }
            Err(e) => {
                // Not recorded: these deliveries stay claimed by this run until the
                // lease runs out; the sent ones went out and go again, with the same
                // Message-ID, when `resume` takes them.
                tally.unrecorded_sent += recorded
                    .group
                    .items
                    .iter()
                    .filter(|(_, o)| matches!(o, DeliveryOutcome::Sent { .. }))
                    .count();
                drop(tally);
                state.store_failed(e);
            }
        }
    }
}
