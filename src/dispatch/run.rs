//! The run's loop: the work it has in hand (claims, messages in flight, outcomes to
//! record, a renewal) and the order in which it starts and takes in each of them.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::domain::{DeliveryCounts, DeliveryOutcome, OwnerId, SenderId};
use crate::progress::{Progress, StopReason};
use crate::repository::RepositoryError;

use super::claims::{Chunk, FRESH_FOR, Leftover, RENEW_AFTER, Ready, Renewed};
use super::deliver::{Settled, Unreachable};
use super::outcomes::{Outcomes, Recorded};
use super::sizing::ClaimSizing;
use super::stop::{PortFailure, RunState};
use super::{Engine, PreparedBatch, UNREACHABLE_RUNS};

/// How many groups of outcomes may wait to be recorded (one being recorded, the
/// others filling) before new messages wait. One was too few: a group's commit waits
/// for the claim in progress, and with SQLite the senders then stood idle for a tenth
/// of the run (`benches/e2e/run.sh 10000`); four leave them idle under 2%.
const UNRECORDED_GROUPS: usize = 4;

/// One run's work in hand, from its first claim until it has nothing more to claim
/// or it stops. Its futures are boxed, which keeps the run `Send` for hosts that
/// spawn it.
pub(super) struct Work<'a> {
    engine: &'a Engine<'a>,
    prepared: &'a PreparedBatch,
    sender: &'a SenderId,
    state: &'a RunState,
    concurrency: usize,
    /// Outcomes recorded in one repository call.
    group: usize,
    renew_after: Duration,
    fresh_for: Duration,
    /// Claimed deliveries, their tokens stored, waiting for a worker.
    queue: VecDeque<Ready>,
    /// The last claim brought nothing new: what is left is settled, or held by other
    /// senders.
    exhausted: bool,
    /// Every delivery this run holds a claim on, from its claim until its outcome is
    /// recorded or it is given back: what a renewal renews.
    holding: HashSet<OwnerId>,
    /// When the lease of everything in `holding` began, at the latest: the last
    /// renewal's or, before one, the first claim's request.
    lease_start: Option<Instant>,
    /// Times in a row the batch had pending deliveries that no claim returned.
    unclaimed_looks: u32,
    /// How much each claim asks for: the run's own pace.
    sizing: ClaimSizing,
    /// The next chunk is claimed (and its tokens stored) while the current one is
    /// being sent, so workers never wait on the repository.
    claiming: Option<BoxFuture<'a, Result<Chunk, PortFailure>>>,
    /// Outcomes are recorded while the next messages go out: the engine never waits
    /// on a commit unless a whole further group is waiting behind it.
    recording: Option<BoxFuture<'a, Recorded>>,
    recording_len: usize,
    /// The deliveries of the group being recorded: a renewal meanwhile may find them
    /// settled by this very group, so only the group's result says whether one was
    /// taken over.
    in_recording: HashSet<OwnerId>,
    /// A renewal renews all that is held when it starts. No claim runs beside it, so
    /// that what a claim brings in always has a lease at least as fresh as the last
    /// renewal's.
    renewing: Option<BoxFuture<'a, Renewed>>,
    in_flight: FuturesUnordered<BoxFuture<'a, Settled>>,
    outcomes: Outcomes,
    /// Deliveries whose retries ran out on connection errors, held back (see
    /// [`Settled::Unreachable`]).
    unreachable: Vec<Unreachable>,
    /// Deliveries to give back when the loop ends: unstarted, or stopped by a fatal
    /// error.
    to_release: Vec<OwnerId>,
}

/// What the loop woke up for.
enum Event {
    Settled(Settled),
    Renewed(Renewed),
    Claimed(Result<Chunk, PortFailure>),
    Recorded(Recorded),
    /// A deadline passed: an outcome group's delay, or a renewal's.
    Due,
}

/// What the loop does when it has nothing in hand.
enum Idle {
    /// It is over; with the batch's counts when it found the batch settled.
    Done(Option<DeliveryCounts>),
    /// Something changed: look again at once.
    Again,
    /// Wait for the next deadline.
    Wait,
}

impl<'a> Work<'a> {
    pub(super) fn new(
        engine: &'a Engine<'a>,
        prepared: &'a PreparedBatch,
        sender: &'a SenderId,
        state: &'a RunState,
    ) -> Self {
        let lease = engine.options.claim_lease;
        Self {
            engine,
            prepared,
            sender,
            state,
            concurrency: engine.options.concurrency.max(1),
            group: engine.options.outcome_group.max(1),
            renew_after: lease.mul_f64(RENEW_AFTER),
            fresh_for: lease.mul_f64(FRESH_FOR),
            queue: VecDeque::new(),
            exhausted: false,
            holding: HashSet::new(),
            lease_start: None,
            unclaimed_looks: 0,
            sizing: ClaimSizing::new(engine.options.concurrency),
            claiming: None,
            recording: None,
            recording_len: 0,
            in_recording: HashSet::new(),
            renewing: None,
            in_flight: FuturesUnordered::new(),
            outcomes: Outcomes::default(),
            unreachable: Vec::new(),
            to_release: Vec::new(),
        }
    }

    /// Claims, sends and records until the batch is settled or the run stops. Each
    /// turn starts what is due (a renewal, the next claim, messages, a group of
    /// outcomes), looks at the batch when nothing is in hand, then waits for the first
    /// thing to finish and takes it in. The batch's counts when it found it settled.
    pub(super) async fn until_settled_or_stopped(&mut self) -> Option<DeliveryCounts> {
        loop {
            let stopping = self.state.is_stopping(self.engine.control);
            let renewal_pending = self.start_renewal_if_due(stopping);
            self.start_claim_if_short(stopping, renewal_pending);
            self.start_messages(stopping);
            let idle = self.in_flight.is_empty() && self.claiming.is_none();
            self.start_recording_if_due(idle);
            if !self.has_work_in_hand(idle, stopping) {
                match self.when_idle(stopping).await {
                    Idle::Done(settled) => return settled,
                    Idle::Again => continue,
                    Idle::Wait => {}
                }
            }
            let deadline = self.next_deadline(renewal_pending, stopping);
            match self.next_event(deadline).await {
                Event::Settled(settled) => self.take_settled(settled),
                Event::Renewed(renewed) => self.take_renewal(renewed),
                Event::Claimed(claimed) => self.take_chunk(claimed),
                Event::Recorded(recorded) => self.take_recorded(recorded),
                Event::Due => {}
            }
        }
    }

    /// What the loop leaves, settled: the held connection failures become outcomes
    /// (they wait for the next run when this one stopped; they fail when it went on),
    /// the waiting outcomes are recorded, and what was claimed but never started goes
    /// back. The run's stop reason as the loop ended, if it stopped.
    pub(super) async fn wind_down(mut self) -> Option<StopReason> {
        let mut stopped = self.state.stop.lock().expect("run state").clone();
        self.settle_held(stopped.is_some());
        let (engine, prepared, sender) = (self.engine, self.prepared, self.sender);
        engine
            .flush(
                &prepared.batch.id,
                sender,
                &mut self.outcomes,
                &mut self.holding,
                &mut self.queue,
                self.state,
            )
            .await;
        self.give_back_unstarted().await;
        if let Some(StopReason::TakenOver { deliveries }) = &mut stopped {
            *deliveries = self.state.leases.lost_count();
        }
        stopped
    }

    /// Whether messages are in flight or outcomes wait to be recorded.
    fn has_unrecorded(&self) -> bool {
        !self.in_flight.is_empty() || self.recording.is_some() || !self.outcomes.items.is_empty()
    }

    /// Starts a renewal of everything held once a lease's `RENEW_AFTER` has passed
    /// (and no claim runs). A stopping run renews only for the outcomes it still has
    /// to record: what it gives back needs no lease. Whether a renewal is due or runs.
    fn start_renewal_if_due(&mut self, stopping: bool) -> bool {
        let renewal_due = self.renewing.is_none()
            && !self.holding.is_empty()
            && (!stopping || self.has_unrecorded())
            && self
                .lease_start
                .is_some_and(|t| t.elapsed() >= self.renew_after);
        if renewal_due && self.claiming.is_none() {
            let owners: Vec<OwnerId> = self.holding.iter().cloned().collect();
            let (engine, prepared, sender) = (self.engine, self.prepared, self.sender);
            self.renewing = Some(Box::pin(engine.renew(&prepared.batch.id, sender, owners)));
        }
        renewal_due || self.renewing.is_some()
    }

    /// Claims the next chunk while fewer than a chunk wait: one chunk is kept in
    /// reserve, so the workers never wait on a claim, and no more, so other senders
    /// find the rest of the batch claimable (see [`sizing`](super::sizing)). Claims
    /// of a stopped run that were never started are given back.
    fn start_claim_if_short(&mut self, stopping: bool, renewal_pending: bool) {
        let chunk = self.sizing.chunk();
        if !stopping
            && !self.exhausted
            && !renewal_pending
            && self.claiming.is_none()
            && self.queue.len() < chunk
        {
            let (engine, prepared, sender) = (self.engine, self.prepared, self.sender);
            self.claiming = Some(Box::pin(engine.claim_chunk(prepared, sender, chunk)));
        }
    }

    /// Starts messages up to the concurrency. Outcomes not yet recorded are what a
    /// crash would send again: new messages wait while there are `UNRECORDED_GROUPS`
    /// groups of them.
    fn start_messages(&mut self, stopping: bool) {
        let backlogged =
            self.recording_len + self.outcomes.items.len() >= self.group * UNRECORDED_GROUPS;
        while !stopping && !backlogged && self.in_flight.len() < self.concurrency {
            let Some(ready) = self.queue.pop_front() else {
                break;
            };
            self.sizing.started(Instant::now);
            let (engine, prepared, state) = (self.engine, self.prepared, self.state);
            self.in_flight
                .push(Box::pin(engine.deliver(prepared, state, ready)));
        }
    }

    /// Records the waiting outcomes when a group is full, its delay has passed, or
    /// nothing else runs; one group at a time.
    fn start_recording_if_due(&mut self, idle: bool) {
        let due = self
            .outcomes
            .since
            .is_some_and(|t| t.elapsed() >= self.engine.options.outcome_delay);
        if self.recording.is_none()
            && !self.outcomes.items.is_empty()
            && (self.outcomes.items.len() >= self.group || due || idle)
        {
            self.recording_len = self.outcomes.items.len();
            self.in_recording
                .extend(self.outcomes.items.iter().map(|(owner, _)| owner.clone()));
            let (engine, prepared, sender) = (self.engine, self.prepared, self.sender);
            let group = self.outcomes.take();
            self.recording = Some(Box::pin(engine.record(&prepared.batch.id, sender, group)));
        }
    }

    fn has_work_in_hand(&self, idle: bool, stopping: bool) -> bool {
        !idle
            || self.recording.is_some()
            || self.renewing.is_some()
            || !self.outcomes.items.is_empty()
            || (!self.queue.is_empty() && !stopping)
    }

    /// With nothing in hand: a stopping run is done; held connection failures with
    /// nothing through after them stop it (the server looks unreachable, however few
    /// deliveries the batch has; they wait); with nothing left to claim, the batch
    /// is looked at: settled, held by other senders (waited for), or pending with no
    /// holder (claimed again, but not for ever).
    async fn when_idle(&mut self, stopping: bool) -> Idle {
        if stopping {
            return Idle::Done(None);
        }
        if let Some(last) = self.unreachable.last() {
            self.state.stop_with(StopReason::Unreachable {
                error: last.error.clone(),
            });
            return Idle::Again;
        }
        if !self.exhausted {
            return Idle::Wait;
        }
        let batch_id = &self.prepared.batch.id;
        match self
            .engine
            .leftover(batch_id, self.sender, self.state)
            .await
        {
            Ok(Leftover::Settled(counts)) => return Idle::Done(Some(counts)),
            Ok(Leftover::Waited) => self.unclaimed_looks = 0,
            Ok(Leftover::Unclaimed) => {
                self.unclaimed_looks += 1;
                if self.unclaimed_looks > 3 {
                    self.state.store_failed(RepositoryError::Corrupt {
                        message: format!(
                            "batch `{batch_id}` has pending deliveries that claim_deliveries never returns"
                        ),
                    });
                    return Idle::Done(None);
                }
            }
            Err(e) => {
                self.state.store_failed(e);
                return Idle::Done(None);
            }
        }
        self.exhausted = false;
        Idle::Again
    }

    /// When to wake up for what is due and not already waiting on something else: a
    /// group's outcome delay, a renewal.
    fn next_deadline(&self, renewal_pending: bool, stopping: bool) -> Option<Instant> {
        let record_by = self
            .outcomes
            .since
            .filter(|_| self.recording.is_none())
            .map(|t| t + self.engine.options.outcome_delay);
        let renew_by = self
            .lease_start
            .filter(|_| {
                !renewal_pending && !self.holding.is_empty() && (!stopping || self.has_unrecorded())
            })
            .map(|t| t + self.renew_after);
        [record_by, renew_by].into_iter().flatten().min()
    }

    /// Waits for the first of: a message settled, the renewal, the claim, the group
    /// being recorded, the deadline.
    async fn next_event(&mut self, deadline: Option<Instant>) -> Event {
        tokio::select! {
            biased;
            Some(settled) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                Event::Settled(settled)
            }
            renewed = async { self.renewing.as_mut().expect("guarded").await }, if self.renewing.is_some() => {
                self.renewing = None;
                Event::Renewed(renewed)
            }
            claimed = async { self.claiming.as_mut().expect("guarded").await }, if self.claiming.is_some() => {
                self.claiming = None;
                Event::Claimed(claimed)
            }
            recorded = async { self.recording.as_mut().expect("guarded").await }, if self.recording.is_some() => {
                self.recording = None;
                Event::Recorded(recorded)
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                Event::Due
            }
        }
    }

    /// A message's end, into the waiting outcomes (or, for a fatal error or an
    /// unstarted message, into what goes back).
    fn take_settled(&mut self, settled: Settled) {
        if matches!(
            settled,
            Settled::Sent { .. } | Settled::Failed { .. } | Settled::Unreachable(_)
        ) {
            self.sizing.settled(Instant::now());
        }
        match settled {
            Settled::Sent {
                owner,
                expires_at,
                attempts,
            } => {
                Engine::give_up_held(&mut self.unreachable, &mut self.outcomes);
                self.outcomes.push(
                    owner,
                    DeliveryOutcome::Sent {
                        expires_at,
                        attempts,
                    },
                );
            }
            Settled::Failed {
                owner,
                error,
                attempts,
            } => {
                Engine::give_up_held(&mut self.unreachable, &mut self.outcomes);
                self.outcomes.failed(owner, error, attempts);
            }
            Settled::Fatal { owner, error } => {
                self.holding.remove(&owner);
                self.to_release.push(owner);
                self.state.stop_with(StopReason::Fatal { error });
            }
            Settled::Unreachable(held)
                if held.runs_before.saturating_add(1) >= UNREACHABLE_RUNS =>
            {
                // Its last run: it fails, saying why. That is no sign that the server
                // can be reached, so what is held stays held.
                let error = format!(
                    "{} (the connection failed on this message in {UNREACHABLE_RUNS} runs in a row)",
                    held.error
                );
                self.outcomes.failed(held.owner, error, held.attempts);
            }
            Settled::Unreachable(held) => {
                let error = held.error.clone();
                self.unreachable.push(held);
                if self.unreachable.len() >= self.engine.options.unreachable_after.max(1) {
                    self.state.stop_with(StopReason::Unreachable { error });
                }
            }
            Settled::Lost => {}
            Settled::Unstarted { owner } => {
                self.holding.remove(&owner);
                self.to_release.push(owner);
            }
        }
    }

    /// A renewal's answer: the leases are fresh from when it was asked; what it
    /// refused and this run still holds was taken over.
    fn take_renewal(&mut self, renewed: Renewed) {
        match renewed.result {
            Ok(refused) => {
                self.lease_start = Some(renewed.asked_at);
                self.state
                    .leases
                    .fresh_until(renewed.asked_at + self.fresh_for);
                // Not taken over: settled by this run meanwhile (no longer held, or in
                // the group being recorded, whose result says).
                let taken: Vec<OwnerId> = refused
                    .into_iter()
                    .filter(|o| self.holding.contains(o) && !self.in_recording.contains(o))
                    .collect();
                self.engine.lose(
                    taken,
                    "renewal",
                    &mut self.holding,
                    &mut self.queue,
                    self.state,
                );
            }
            Err(e) => self.state.store_failed(e),
        }
    }

    /// A claimed chunk: its skipped deliveries into the outcomes, the rest into the
    /// queue. A delivery this run already holds (claimed again when its lease ran out
    /// before a renewal) is already on its way.
    fn take_chunk(&mut self, claimed: Result<Chunk, PortFailure>) {
        let chunk = match claimed {
            Ok(chunk) => chunk,
            Err(failure) => return self.state.fail(failure),
        };
        if self.holding.is_empty() {
            self.lease_start = Some(chunk.asked_at);
            self.state
                .leases
                .fresh_until(chunk.asked_at + self.fresh_for);
        }
        let mut fresh = 0usize;
        for (owner, reason) in chunk.skipped {
            self.state.leases.regained(&owner);
            if self.holding.insert(owner.clone()) {
                fresh += 1;
                self.outcomes.skipped(owner, reason);
            }
        }
        for ready in chunk.ready {
            self.state.leases.regained(&ready.delivery.owner);
            if self.holding.insert(ready.delivery.owner.clone()) {
                fresh += 1;
                self.queue.push_back(ready);
            }
        }
        if fresh > 0 {
            self.unclaimed_looks = 0;
        }
        if fresh == 0 {
            // Nothing new came back: what is left is settled, or held by other senders.
            self.exhausted = true;
        }
    }

    /// A recorded group: its deliveries are no longer held, and its events are
    /// reported. The store's first failure stops the run, and the group is tried once
    /// more with the last outcomes (the store may be back by then: a lock held a
    /// little past the busy time-out).
    fn take_recorded(&mut self, recorded: Recorded) {
        self.recording_len = 0;
        self.in_recording.clear();
        match recorded.result {
            Err(e) if !self.state.has_failed() => {
                self.state.store_failed(e);
                self.outcomes.put_back(recorded.group);
            }
            result => {
                let recorded = Recorded {
                    group: recorded.group,
                    result,
                };
                for (owner, _) in &recorded.group.items {
                    self.holding.remove(owner);
                }
                self.engine
                    .report(recorded, &mut self.holding, &mut self.queue, self.state);
            }
        }
    }

    /// The held connection failures, once the loop ended. When the run stopped, the
    /// server looked unreachable: those owners are not failed, they wait, and the run
    /// is counted on each (the last of `UNREACHABLE_RUNS` fails them as they come in,
    /// in [`take_settled`](Self::take_settled)). When it went on, they fail.
    fn settle_held(&mut self, stopped: bool) {
        if stopped {
            for held in self.unreachable.drain(..) {
                self.outcomes.push(
                    held.owner,
                    DeliveryOutcome::Unreachable {
                        attempts: held.attempts,
                    },
                );
            }
        } else {
            Engine::give_up_held(&mut self.unreachable, &mut self.outcomes);
        }
    }

    /// Gives back what was claimed but never started (the run stopped), or stopped
    /// by a fatal error. Those another sender took meanwhile are refused, and stay
    /// that sender's.
    async fn give_back_unstarted(&mut self) {
        self.to_release
            .extend(self.queue.drain(..).map(|r| r.delivery.owner));
        if self.to_release.is_empty() {
            return;
        }
        match self
            .engine
            .repo
            .release_deliveries(&self.prepared.batch.id, self.sender, &self.to_release)
            .await
        {
            // Refused: another sender holds them now.
            Ok(refused) => {
                let lost = self.state.leases.lose(refused);
                if !lost.is_empty() {
                    tracing::warn!(
                        deliveries = lost.len(),
                        refused = "release",
                        "another sender took over deliveries this run gave back"
                    );
                }
                for owner in lost {
                    self.engine.control.emit(Progress::TakenOver { owner });
                }
            }
            Err(e) => self.state.store_failed(e),
        }
    }
}
