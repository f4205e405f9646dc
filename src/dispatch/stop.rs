//! Why a run stops, and how every part of it learns so at once: the host's signal,
//! the run's own reasons (a fatal error, an unreachable server, a take-over) and a
//! port's failure, which outranks them in the end.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::BatchId;
use crate::error::Side;
use crate::progress::{Progress, RunControl, StopReason};
use crate::repository::RepositoryError;

use super::Engine;
use super::claims::Leases;
use super::outcomes::Tally;
use super::pace::Slots;

/// A port's failure during a run, with the port it came from.
pub(super) struct PortFailure {
    pub(super) side: Side,
    pub(super) error: RepositoryError,
}

pub(super) struct RunState {
    pub(super) stop: Mutex<Option<StopReason>>,
    /// The first port failure: the run stops, and ends with
    /// [`StopReason::StoreUnavailable`] naming the side.
    pub(super) error: Mutex<Option<PortFailure>>,
    /// What this run's outcomes became, for a report the store cannot give.
    pub(super) tally: Mutex<Tally>,
    /// The rate slots granted to this run and not used yet.
    pub(super) slots: tokio::sync::Mutex<Slots>,
    pub(super) leases: Leases,
    /// The last `Waiting` event, so a wait that did not change is told once.
    pub(super) last_wait: Mutex<Option<Progress>>,
    /// Wakes every wait of the run when it stops for a reason of its own (a fatal
    /// error, an unreachable server, a store failure, a take-over).
    pub(super) stopping: Notify,
}

impl RunState {
    pub(super) fn new(batch: BatchId) -> Self {
        Self {
            stop: Mutex::new(None),
            error: Mutex::new(None),
            tally: Mutex::new(Tally::default()),
            slots: tokio::sync::Mutex::new(Slots::new(batch)),
            leases: Leases::default(),
            last_wait: Mutex::new(None),
            stopping: Notify::new(),
        }
    }

    pub(super) fn stop_with(&self, reason: StopReason) {
        let mut stop = self.stop.lock().expect("run state");
        if stop.is_none() {
            *stop = Some(reason);
        }
        drop(stop);
        self.stopping.notify_waiters();
    }

    pub(super) fn fail(&self, failure: PortFailure) {
        let mut slot = self.error.lock().expect("run state");
        if slot.is_none() {
            *slot = Some(failure);
        }
        drop(slot);
        self.stopping.notify_waiters();
    }

    /// [`fail`](Self::fail) with an error of the invitation store.
    pub(super) fn store_failed(&self, error: RepositoryError) {
        self.fail(PortFailure {
            side: Side::Store,
            error,
        });
    }

    /// Completes once the run is stopping, for whatever reason (at once if it is).
    pub(super) async fn stopped(&self, control: &RunControl) {
        loop {
            let own = self.stopping.notified();
            tokio::pin!(own);
            own.as_mut().enable();
            if self.is_stopping(control) {
                return;
            }
            tokio::select! {
                _ = &mut own => {}
                _ = control.stop.stopped() => {}
            }
        }
    }

    pub(super) fn has_failed(&self) -> bool {
        self.error.lock().expect("run state").is_some()
    }

    pub(super) fn is_stopping(&self, control: &RunControl) -> bool {
        if control.stop.is_stopped() {
            self.stop_with(StopReason::Cancelled);
        }
        self.stop.lock().expect("run state").is_some() || self.has_failed()
    }
}

impl RunState {
    /// The run's stop reason as it ends: a port's failure outranks the stop it may
    /// have met, since it is what the operator has to fix, and it is why outcomes may
    /// be missing.
    pub(super) fn final_reason(&self, stopped: Option<StopReason>) -> Option<StopReason> {
        match self.error.lock().expect("run state").take() {
            Some(failure) => Some(StopReason::port_failed(failure.side, &failure.error)),
            None => stopped,
        }
    }
}

impl Engine<'_> {
    /// Sleeps on the run's clock until `total` has passed or the run stops, whichever
    /// comes first: a stop request ends every wait at once. `false` when it stopped.
    pub(super) async fn wait(&self, total: Duration, state: &RunState) -> bool {
        if state.is_stopping(self.control) {
            return false;
        }
        tokio::select! {
            biased;
            _ = state.stopped(self.control) => false,
            _ = self.clock.sleep(total) => true,
        }
    }
}
