//! The community activity feed.

use serde::{Deserialize, Serialize};

use super::{BatchId, CommunityId, DraftId, OwnerId, Timestamp};

/// One line of the Community Activity Feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityEntry {
    /// The community it belongs to.
    pub community: CommunityId,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: ActivityKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActivityKind {
    /// A draft was saved (new or updated).
    DraftSaved {
        /// The draft.
        draft: DraftId,
        /// How many owners it selects.
        selected: usize,
    },
    /// A draft was discarded.
    DraftDiscarded {
        /// The draft.
        draft: DraftId,
    },
    /// A batch was stored, before its first message went out. Written in the same
    /// step as the batch, so a crashed send can always be found and resumed.
    BatchCreated {
        /// The batch.
        batch: BatchId,
        /// Deliveries it holds.
        recipients: usize,
        /// Selected owners left out (with reasons in the review).
        excluded: usize,
        /// Whether it is a resend to one owner.
        resend: bool,
    },
    /// A run of a batch ended: everything settled, or it stopped with deliveries
    /// still pending.
    BatchFinished {
        /// The batch.
        batch: BatchId,
        /// Sent so far.
        sent: usize,
        /// Failed so far.
        failed: usize,
        /// Still pending (non-zero when the run stopped early).
        pending: usize,
        /// Why the run stopped early, if it did.
        stopped: Option<String>,
    },
    /// An owner registered through their link.
    Registered {
        /// The owner.
        owner: OwnerId,
        /// The batch whose link they used.
        batch: BatchId,
    },
    /// A mass edit of primary emails was applied.
    MassEdit {
        /// How many owners' addresses changed.
        changed: usize,
    },
}

impl ActivityKind {
    /// The batch the entry is about, if any.
    pub fn batch(&self) -> Option<&BatchId> {
        match self {
            ActivityKind::BatchCreated { batch, .. }
            | ActivityKind::BatchFinished { batch, .. }
            | ActivityKind::Registered { batch, .. } => Some(batch),
            _ => None,
        }
    }
}

/// Which page of the feed to read, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Entries to skip.
    pub offset: usize,
    /// Entries to return at most.
    pub limit: usize,
}

impl Page {
    /// The first `limit` entries.
    pub fn first(limit: usize) -> Self {
        Self { offset: 0, limit }
    }

    /// The page after this one.
    pub fn next(self) -> Self {
        Self {
            offset: self.offset + self.limit,
            limit: self.limit,
        }
    }
}
