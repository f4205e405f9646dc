//! What a send run reports while it runs, and how a host stops it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::channel::mpsc;
use tokio::sync::Notify;

use crate::domain::{BatchId, OwnerId, SkipReason, Timestamp};
use crate::error::{Side, with_causes};
use crate::repository::RepositoryError;

/// One thing that happened during a send run, in the order it happened. A host draws a
/// progress bar from these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The run started; `pending` deliveries are waiting.
    Queued {
        /// The batch.
        batch: BatchId,
        /// Deliveries still to send when the run started.
        pending: usize,
    },
    /// The server accepted an owner's message.
    Sent {
        /// The owner.
        owner: OwnerId,
    },
    /// A transient error; the message will be tried again after `delay`.
    Retrying {
        /// The owner.
        owner: OwnerId,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// How long the engine waits before the next attempt.
        delay: Duration,
        /// The error.
        error: String,
    },
    /// An owner's delivery failed for good in this run.
    Failed {
        /// The owner.
        owner: OwnerId,
        /// Why.
        error: String,
    },
    /// An owner's delivery was not sent on purpose: checked again just before sending,
    /// the owner was no longer one the batch may send to. Recorded as skipped, not
    /// failed.
    Skipped {
        /// The owner.
        owner: OwnerId,
        /// Why.
        reason: SkipReason,
    },
    /// What is left of the batch is held by other senders: the run waits for their
    /// leases to run out (their senders died) or for them to settle it (they are
    /// alive and renewing), then goes on. Sent again whenever the run looks again and
    /// they still hold some.
    Waiting {
        /// Deliveries held by other senders.
        held: usize,
        /// How many senders hold them.
        senders: usize,
        /// When the last of their leases runs out unless renewed, by the store's
        /// clock: the longest this wait lasts if those senders are dead.
        until: Timestamp,
    },
    /// Another sender took this delivery over after this run's lease on it ran out
    /// (this process was paused, or could not reach the store, for longer than the
    /// lease). This run's outcome for it, if any, was not recorded: the delivery is
    /// the other sender's now. The run stops.
    TakenOver {
        /// The owner.
        owner: OwnerId,
    },
    /// The run stopped early; what was not sent stays pending for `resume`.
    Stopped {
        /// Why.
        reason: StopReason,
    },
    /// The run ended (after `Stopped`, if it stopped).
    Finished {
        /// Sent by this batch so far, over all runs.
        sent: usize,
        /// Failed so far.
        failed: usize,
        /// Still pending.
        pending: usize,
    },
}

/// Why a run stopped before every delivery was settled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "stop", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopReason {
    /// The host asked it to stop ([`StopSignal::stop`]).
    Cancelled,
    /// The transport reported a fatal error (authentication, TLS, settings).
    Fatal {
        /// The error.
        error: String,
    },
    /// Several deliveries in a row exhausted their retries on connection errors: the
    /// server looks unreachable.
    Unreachable {
        /// The last error.
        error: String,
    },
    /// Another sender took over some of this run's deliveries after their lease ran
    /// out: this process was paused or cut off from the store for longer than the
    /// lease. Those deliveries are that sender's to finish; this run gave back the
    /// others it held and stopped, so the two do not compete.
    TakenOver {
        /// How many deliveries were taken over.
        deliveries: usize,
    },
    /// A storage port failed during the run (busy past its time-out, full,
    /// read-only, gone): the run stopped as for any other stop, started nothing new,
    /// let the messages in flight finish and tried once more to record their
    /// outcomes. What the store did not take stays claimed by this run until its
    /// lease runs out (at most [`SendOptions::claim_lease`](crate::SendOptions::claim_lease)),
    /// then `resume` sends it, with the same Message-ID: the messages accepted but not
    /// recorded ([`SendReport::unrecorded`](crate::SendReport::unrecorded)) may go
    /// twice, as after a crash, and no more.
    ///
    /// `side` says which port: most often the invitation store (every claim and
    /// outcome is written there); the owner directory when reading the owners of a
    /// claimed chunk (for the check just before sending) failed: that chunk was not
    /// sent, and stays claimed until the lease runs out like the rest.
    StoreUnavailable {
        /// The port that failed.
        side: Side,
        /// The port's error with its causes (`SQLite repository db is unavailable:
        /// database is locked …`).
        error: String,
    },
}

impl StopReason {
    /// A short machine-readable name: `cancelled`, `fatal`, `unreachable`,
    /// `taken_over`, `store_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            StopReason::Cancelled => "cancelled",
            StopReason::Fatal { .. } => "fatal",
            StopReason::Unreachable { .. } => "unreachable",
            StopReason::TakenOver { .. } => "taken_over",
            StopReason::StoreUnavailable { .. } => "store_unavailable",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Cancelled => f.write_str("stopped on request"),
            StopReason::Fatal { error } => write!(f, "fatal transport error: {error}"),
            StopReason::Unreachable { error } => write!(f, "mail server unreachable: {error}"),
            StopReason::TakenOver { deliveries } => write!(
                f,
                "another sender took over {deliveries} deliveries after this run's lease on them ran out"
            ),
            StopReason::StoreUnavailable { side, error } => {
                write!(f, "{side} failed during the send: {error}")
            }
        }
    }
}

impl StopReason {
    /// The stop a port's failure during a run makes, its error with its causes.
    pub(crate) fn port_failed(side: Side, error: &RepositoryError) -> Self {
        StopReason::StoreUnavailable {
            side,
            error: with_causes(error),
        }
    }
}

/// Lets a host stop a run gracefully: no new message is started, the ones in flight
/// finish, the rest stays pending. Every wait of the run ends at once when it is
/// raised: for a rate slot, a retry's backoff, a renewal, other senders' leases; a
/// message that was waiting goes back to pending, unsent. Cloning shares the signal.
/// (Dropping the run's future also stops it, but then in-flight messages end in an
/// unknown state and their claims are taken over by the next run only once their
/// lease has run out.)
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<SignalState>);

#[derive(Debug, Default)]
struct SignalState {
    raised: AtomicBool,
    /// Wakes what waits in [`StopSignal::stopped`].
    raised_now: Notify,
}

impl StopSignal {
    /// A signal not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop.
    pub fn stop(&self) {
        self.0.raised.store(true, Ordering::SeqCst);
        self.0.raised_now.notify_waiters();
    }

    /// Whether stop was asked.
    pub fn is_stopped(&self) -> bool {
        self.0.raised.load(Ordering::SeqCst)
    }

    /// Completes once stop has been asked (at once if it was already).
    pub async fn stopped(&self) {
        loop {
            let raised = self.0.raised_now.notified();
            tokio::pin!(raised);
            // Registered before the check, so a `stop` between the two is not missed.
            raised.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            raised.await;
        }
    }
}

/// Receives progress events. Called from the run's task; keep it quick.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How a host watches and controls one run.
#[derive(Clone, Default)]
pub struct RunControl {
    /// Called with every event, when set.
    pub progress: Option<ProgressFn>,
    /// Raised to stop the run.
    pub stop: StopSignal,
}

impl RunControl {
    /// No progress, never stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `f` with every event.
    pub fn with_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Uses this stop signal.
    pub fn with_stop(mut self, stop: StopSignal) -> Self {
        self.stop = stop;
        self
    }

    /// Events as a `Stream`: returns the control to pass to the run and the receiving
    /// end. The stream ends when the run is over.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Progress>) {
        let (tx, rx) = mpsc::unbounded();
        let control = Self::new().with_progress(move |p| {
            let _ = tx.unbounded_send(p.clone());
        });
        (control, rx)
    }

    pub(crate) fn emit(&self, event: Progress) {
        if let Some(f) = &self.progress {
            f(&event);
        }
    }
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("progress", &self.progress.is_some())
            .field("stop", &self.stop)
            .finish()
    }
}
