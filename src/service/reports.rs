//! What a send run reports, and the activity feed.

use serde::Serialize;

use crate::dispatch::RunOutcome;
use crate::domain::{ActivityEntry, BatchId, CommunityId, OwnerId, Page, SkipReason};
use crate::error::{Error, Result};
use crate::progress::StopReason;
use crate::review::Excluded;

use super::OwnerAccess;

/// An owner's delivery that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedDelivery {
    /// The owner.
    pub owner: OwnerId,
    /// Why.
    pub error: String,
}

/// An owner's delivery that was not sent on purpose: checked again just before
/// sending, the owner was no longer one the batch may send to. Not a failure: it does
/// not make [`SendReport::is_complete`] false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedDelivery {
    /// The owner.
    pub owner: OwnerId,
    /// Why.
    pub reason: SkipReason,
}

/// What happened to the Summary recap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "summary", rename_all = "snake_case")]
pub enum SummaryOutcome {
    /// Sent to this address.
    Sent {
        /// The Summary address.
        to: String,
    },
    /// Could not be sent (the batch itself is unaffected).
    Failed {
        /// The Summary address.
        to: String,
        /// Why.
        error: String,
    },
}

/// The state of a batch after a send run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendReport {
    /// The batch (absent when nothing was to be sent and no batch was made).
    pub batch: Option<BatchId>,
    /// Deliveries in the batch.
    pub recipients: usize,
    /// Accepted by the server.
    pub sent: usize,
    /// Still to send (the run stopped, or another process holds them).
    pub pending: usize,
    /// Of `sent`, the messages whose outcome the store did not take: the run stopped
    /// with [`StopReason::StoreUnavailable`]. Their deliveries stay claimed until the
    /// lease runs out; `resume` then sends them again with the same Message-ID (the
    /// duplicates a crash can cause, and no more). 0 otherwise.
    pub unrecorded: usize,
    /// Failed, with reasons.
    pub failed: Vec<FailedDelivery>,
    /// Deliveries of the batch not sent on purpose, with reasons (the owner moved,
    /// registered, changed or now shares their address since the batch was made).
    /// Unlike [`excluded`](Self::excluded), these are deliveries of the batch: they
    /// count in `recipients`.
    pub skipped: Vec<SkippedDelivery>,
    /// Selected owners who were not sent to, with reasons (from the review; empty for
    /// `resume` and `retry_failed`).
    pub excluded: Vec<Excluded>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// The Summary recap, if one was sent or tried in this run.
    pub summary: Option<SummaryOutcome>,
}

impl SendReport {
    /// Every recipient sent (or there were none), nothing pending.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.pending == 0 && self.stopped.is_none()
    }
}

impl OwnerAccess {
    /// A page of the community's activity feed, newest first.
    ///
    /// # Errors
    /// - [`Error::Repository`] with `Side::Store`: reading the feed failed. A community
    ///   that does not exist has no entries (an empty list, not an error).
    pub async fn activity(
        &self,
        community: &CommunityId,
        page: Page,
    ) -> Result<Vec<ActivityEntry>> {
        self.store
            .activity(community, page)
            .await
            .map_err(Error::store)
    }
}

pub(super) fn report_from(
    batch: &BatchId,
    outcome: &RunOutcome,
    failed: Vec<FailedDelivery>,
    skipped: Vec<SkippedDelivery>,
    stopped: Option<StopReason>,
) -> SendReport {
    let counts = &outcome.counts;
    // Sent but not recorded: they went out, so they count as sent; the store still
    // has them claimed.
    let unrecorded = outcome.unrecorded_sent;
    SendReport {
        batch: Some(batch.clone()),
        recipients: counts.total(),
        sent: counts.sent + unrecorded,
        unrecorded,
        pending: (counts.pending + counts.claimed).saturating_sub(unrecorded),
        failed,
        skipped,
        excluded: Vec::new(),
        stopped,
        summary: None,
    }
}
