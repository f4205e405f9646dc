//! The send engine: claims a batch's deliveries, renders and sends each with bounded
//! concurrency, retries transient errors with backoff, records every outcome, and stops
//! the run (leaving the rest pending) on a fatal error, on a run of connection failures,
//! or when the host asks.
//!
//! Each run is a sender with an id of its own; its claims are leases it renews while
//! it works (one repository call for all of them, every quarter of a lease), and it
//! starts a message only on a claim renewed recently enough that no other sender can
//! have taken it. When the rest of the batch is held by other senders, the run waits
//! for their leases to run out, or for them to settle it, and so ends only when the
//! batch is settled or it stops with a reason.
//!
//! Nothing is buffered per batch: deliveries are claimed in small chunks as workers
//! free up, each message is built, sent and dropped; shared parts (compiled templates,
//! encoded attachments) are prepared once per run.
//!
//! The parts, each in its file: [`options`](SendOptions) (how a batch is sent), the
//! run's loop (`run`), its claims and leases (`claims`), one delivery with its retries
//! (`deliver`), outcomes recorded in groups (`outcomes`), how much a claim asks for
//! (`sizing`), the rate limit (`pace`), and why a run stops (`stop`).

mod claims;
mod deliver;
mod options;
mod outcomes;
mod pace;
mod run;
mod sizing;
mod stop;

pub use options::{DEFAULT_CLAIM_LEASE, RetryPolicy, SendOptions, UNREACHABLE_RUNS};

use std::time::Duration;

use crate::clock::Clock;
use crate::domain::{Batch, BatchId, Community, DeliveryCounts, OwnerId, SenderId};
use crate::mime::{MessageFrame, MessageIds};
use crate::progress::{Progress, RunControl, StopReason};
use crate::repository::{InvitationStore, OwnerRepository};
use crate::template::CompiledTemplate;
use crate::transport::MailTransport;
use tracing::Instrument;

use run::Work;
use stop::RunState;

/// Everything one run shares across deliveries, prepared once.
pub(crate) struct PreparedBatch {
    pub batch: Batch,
    pub template: CompiledTemplate,
    pub frame: MessageFrame,
    /// The community as the batch runs: its name, time zone and branding.
    pub community: Community,
    /// The merge field `reply_to`: the batch's Reply-To, or empty.
    pub reply_to: String,
    /// The batch's Message-IDs, per owner.
    pub message_ids: MessageIds,
    /// The encoded attachments' size, to size each message's buffer once.
    pub attachments_len: usize,
}

impl PreparedBatch {
    fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.batch.token_ttl_seconds)
    }
}

pub(crate) struct Engine<'a> {
    pub repo: &'a dyn InvitationStore,
    /// The host's owners, read once per claimed chunk (never once per message).
    pub directory: &'a dyn OwnerRepository,
    pub transport: &'a dyn MailTransport,
    pub clock: &'a dyn Clock,
    pub options: &'a SendOptions,
    pub control: &'a RunControl,
}

pub(crate) struct RunOutcome {
    pub stopped: Option<StopReason>,
    /// The batch's counts when the run ended: nothing open unless it stopped. When the
    /// store could not give them, the counts the run started with plus what it
    /// recorded.
    pub counts: DeliveryCounts,
    /// Whether `counts` came from the store.
    pub counts_stored: bool,
    /// Messages this run sent whose outcome the store did not take: in `counts` they
    /// are still claimed.
    pub unrecorded_sent: usize,
    /// The failures this run recorded, for a report the store cannot give.
    pub recorded_failed: Vec<(OwnerId, String)>,
}

impl Engine<'_> {
    /// Sends the batch until it is settled or the run stops: claims what is
    /// claimable, renews what it holds, and when the rest is held by other senders,
    /// waits for their leases to run out (or for them to settle it). `before` is the
    /// batch's counts as the run starts.
    ///
    /// A repository error is a stop like any other ([`StopReason::StoreUnavailable`]):
    /// nothing new starts, the messages in flight finish, their outcomes are tried
    /// once more, and what the store did not take stays claimed until the lease runs
    /// out, for `resume`.
    ///
    /// Its log events are in a `send_run` span naming the batch, its community and
    /// this run's sender id.
    pub async fn run(&self, prepared: &PreparedBatch, before: DeliveryCounts) -> RunOutcome {
        let sender = SenderId::generate();
        let span = tracing::info_span!(
            "send_run",
            batch = %prepared.batch.id,
            community = %prepared.batch.community,
            sender = %sender,
        );
        self.run_as(prepared, before, sender).instrument(span).await
    }

    /// [`run`](Self::run) as the sender `sender`, inside its span.
    async fn run_as(
        &self,
        prepared: &PreparedBatch,
        before: DeliveryCounts,
        sender: SenderId,
    ) -> RunOutcome {
        tracing::info!(
            pending = before.pending + before.claimed,
            sent_before = before.sent,
            "send run started"
        );
        self.control.emit(Progress::Queued {
            batch: prepared.batch.id.clone(),
            pending: before.pending + before.claimed,
        });
        let state = RunState::new(prepared.batch.id.clone());
        let mut work = Work::new(self, prepared, &sender, &state);
        let settled = work.until_settled_or_stopped().await;
        let stopped = work.wind_down().await;
        let counts = self.final_counts(&prepared.batch.id, settled, &state).await;
        let stopped = state.final_reason(stopped);
        self.finish(before, counts, stopped, &state)
    }

    /// The batch's counts as the run ends: those it found the batch settled with, or
    /// the store's now; `None` when the store cannot give them.
    async fn final_counts(
        &self,
        batch: &BatchId,
        settled: Option<DeliveryCounts>,
        state: &RunState,
    ) -> Option<DeliveryCounts> {
        if settled.is_some() {
            return settled;
        }
        match self.repo.delivery_counts(batch).await {
            Ok(counts) => Some(counts),
            Err(e) => {
                state.store_failed(e);
                None
            }
        }
    }

    /// Tells the observer how the run ended, and what it did. Counts the store could
    /// not give are those the run started with plus what it recorded.
    fn finish(
        &self,
        before: DeliveryCounts,
        counts: Option<DeliveryCounts>,
        stopped: Option<StopReason>,
        state: &RunState,
    ) -> RunOutcome {
        if let Some(reason) = &stopped {
            log_stop(reason);
            self.control.emit(Progress::Stopped {
                reason: reason.clone(),
            });
        }
        let tally = std::mem::take(&mut *state.tally.lock().expect("run state"));
        let counts_stored = counts.is_some();
        let counts = counts.unwrap_or_else(|| {
            let sent = before.sent + tally.recorded_sent;
            let failed = before.failed + tally.recorded_failed.len();
            let skipped = before.skipped + tally.recorded_skipped;
            DeliveryCounts {
                pending: before.total().saturating_sub(sent + failed + skipped),
                claimed: 0,
                sent,
                failed,
                skipped,
            }
        });
        let sent = counts.sent + tally.unrecorded_sent;
        let pending = (counts.pending + counts.claimed).saturating_sub(tally.unrecorded_sent);
        tracing::info!(
            sent,
            failed = counts.failed,
            skipped = counts.skipped,
            pending,
            unrecorded = tally.unrecorded_sent,
            stop = stopped.as_ref().map_or("none", StopReason::code),
            "send run ended"
        );
        self.control.emit(Progress::Finished {
            sent,
            failed: counts.failed,
            pending,
        });
        RunOutcome {
            stopped,
            counts,
            counts_stored,
            unrecorded_sent: tally.unrecorded_sent,
            recorded_failed: tally.recorded_failed,
        }
    }
}

/// A stop at the level its operator needs: what cannot go on without them (a fatal
/// transport error, a failed port) is an error; what waits for the next run (an
/// unreachable server, a take-over) a warning; a stop the host asked for, news.
fn log_stop(reason: &StopReason) {
    let code = reason.code();
    match reason {
        StopReason::Fatal { .. } | StopReason::StoreUnavailable { .. } => {
            tracing::error!(code, reason = %reason, "send run stopped");
        }
        StopReason::Unreachable { .. } | StopReason::TakenOver { .. } => {
            tracing::warn!(code, reason = %reason, "send run stopped");
        }
        StopReason::Cancelled => tracing::info!(code, reason = %reason, "send run stopped"),
    }
}
