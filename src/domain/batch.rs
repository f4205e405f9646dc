//! Durable send batches, their deliveries, and drafts.

use serde::{Deserialize, Serialize};

use super::{BatchId, CommunityId, DraftId, EmailAddress, Mailbox, OwnerId, SenderId, Timestamp};
use crate::invite::Invite;

/// A saved invitation, to be reviewed and sent later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    /// Its id.
    pub id: DraftId,
    /// The invite as written (its `draft` field is this id).
    pub invite: Invite,
    /// When first saved.
    pub created_at: Timestamp,
    /// When last saved.
    pub updated_at: Timestamp,
}

/// A batch as stored: everything a process needs to resume sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Its id; part of every Message-ID it sends.
    pub id: BatchId,
    /// The community.
    pub community: CommunityId,
    /// The invite as written, with its attachments.
    pub invite: Invite,
    /// The From mailbox (kept so a resumed batch sends the same message).
    pub sender: Mailbox,
    /// The portal's registration URL the links are made from.
    pub portal_url: String,
    /// How long each link is valid, in seconds.
    pub token_ttl_seconds: u64,
    /// When it was created.
    pub created_at: Timestamp,
    /// Whether it is a resend to one owner.
    pub resend: bool,
}

/// One owner's message in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The batch.
    pub batch: BatchId,
    /// The owner.
    pub owner: OwnerId,
    /// The address it goes to, fixed when the batch was created.
    pub to: EmailAddress,
    /// Where it stands.
    pub state: DeliveryState,
    /// Transport attempts made so far, over every run.
    pub attempts: u32,
    /// Runs that left it pending because the mail server could not be reached (its
    /// retries in that run ran out on connection errors). The send engine fails it
    /// once this reaches [`UNREACHABLE_RUNS`](crate::dispatch::UNREACHABLE_RUNS), so
    /// that a message that makes the server drop the connection every time does not
    /// stop every run. 0 for a new delivery and after
    /// [`requeue_failed`](crate::repository::InvitationStore::requeue_failed).
    #[serde(default)]
    pub unreachable_runs: u32,
}

/// A delivery's state. Pending → Claimed → Sent, Failed or Skipped, each move once; only
/// [`InvitationStore::requeue_failed`](crate::repository::InvitationStore::requeue_failed)
/// moves Failed back to Pending. A claim is a lease: once it has run out (its holder
/// stopped renewing it, presumably dead), another sender may take it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not sent yet.
    Pending,
    /// A sender holds it and may be sending it now.
    Claimed {
        /// When this holder claimed it.
        at: Timestamp,
        /// The run of the send engine that holds the claim.
        holder: SenderId,
        /// When the lease runs out unless the holder renews it, by the store's clock.
        until: Timestamp,
    },
    /// The server accepted it.
    Sent {
        /// When.
        at: Timestamp,
    },
    /// It could not be delivered.
    Failed {
        /// When.
        at: Timestamp,
        /// The transport's error, for the manager.
        error: String,
    },
    /// Never sent, on purpose: when it came to be sent, the owner was no longer one
    /// the batch may send to (see [`SkipReason`]). Settled, like sent and failed; not
    /// a failure (nothing went wrong in delivery) and never sent again by this batch.
    Skipped {
        /// When.
        at: Timestamp,
        /// Why.
        reason: SkipReason,
    },
}

impl DeliveryState {
    /// Whether it is still to be sent (pending or claimed).
    pub fn is_open(&self) -> bool {
        matches!(self, DeliveryState::Pending | DeliveryState::Claimed { .. })
    }
}

/// Why a delivery of a batch was not sent after all: the send engine checks each owner
/// against the repository just before sending (a batch may be resumed long after it
/// was made), and skips one that the batch may no longer send to. Checked in this
/// order; the first that applies is the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// The owner record no longer exists.
    UnknownOwner,
    /// The owner belongs to another community now (a later import moved them): the
    /// batch's letter, Reply-To and branding are another community's.
    Moved,
    /// The owner registered meanwhile.
    Registered,
    /// The owner's primary email is no longer the address the batch was made for (by
    /// [`delivered_key`](super::delivered_key)): changed, cleared or now invalid.
    EmailChanged,
    /// Another owner record holds the same address now: each property needs its own
    /// address (one owner record per property, so a person owning two units needs
    /// two addresses).
    SharedEmail,
}

impl SkipReason {
    /// Every reason, in the order they are checked.
    pub const ALL: [SkipReason; 5] = [
        SkipReason::UnknownOwner,
        SkipReason::Moved,
        SkipReason::Registered,
        SkipReason::EmailChanged,
        SkipReason::SharedEmail,
    ];

    /// A stable snake_case code (`unknown_owner`, `moved`, `registered`,
    /// `email_changed`, `shared_email`) for storage, JSON and tests.
    pub fn code(self) -> &'static str {
        match self {
            SkipReason::UnknownOwner => "unknown_owner",
            SkipReason::Moved => "moved",
            SkipReason::Registered => "registered",
            SkipReason::EmailChanged => "email_changed",
            SkipReason::SharedEmail => "shared_email",
        }
    }

    /// The reason with this [`code`](Self::code), if any.
    pub fn from_code(code: &str) -> Option<SkipReason> {
        SkipReason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::UnknownOwner => "the owner no longer exists",
            SkipReason::Moved => "the owner moved to another community",
            SkipReason::Registered => "the owner registered meanwhile",
            SkipReason::EmailChanged => "the owner's primary email changed",
            SkipReason::SharedEmail => "the owner's primary email is shared with another owner now",
        })
    }
}

/// How a claimed delivery ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// Accepted by the server. The owner becomes invited, the link valid until
    /// `expires_at`.
    Sent {
        /// The link's expiry.
        expires_at: Timestamp,
        /// Transport attempts this run made.
        attempts: u32,
    },
    /// Not delivered.
    Failed {
        /// Why.
        error: String,
        /// Transport attempts this run made.
        attempts: u32,
    },
    /// Not delivered because the mail server could not be reached: the delivery goes
    /// back to pending, for a later run, and its
    /// [`unreachable_runs`](Delivery::unreachable_runs) grows by one.
    Unreachable {
        /// Transport attempts this run made.
        attempts: u32,
    },
    /// Not sent on purpose: the owner is no longer one the batch may send to. No
    /// attempt was made; the owner's access does not change.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
}

/// Counts of a batch's deliveries by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Not sent yet.
    pub pending: usize,
    /// Taken by a sender.
    pub claimed: usize,
    /// Accepted.
    pub sent: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped: not sent on purpose ([`SkipReason`]).
    pub skipped: usize,
}

impl DeliveryCounts {
    /// All deliveries.
    pub fn total(&self) -> usize {
        self.pending + self.claimed + self.sent + self.failed + self.skipped
    }

    /// Counts one state.
    pub fn add(&mut self, state: &DeliveryState) {
        match state {
            DeliveryState::Pending => self.pending += 1,
            DeliveryState::Claimed { .. } => self.claimed += 1,
            DeliveryState::Sent { .. } => self.sent += 1,
            DeliveryState::Failed { .. } => self.failed += 1,
            DeliveryState::Skipped { .. } => self.skipped += 1,
        }
    }
}

/// A batch and its first activity entry and deliveries, stored in one atomic step by
/// [`InvitationStore::create_batch`](crate::repository::InvitationStore::create_batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBatch {
    /// The batch.
    pub batch: Batch,
    /// Its deliveries, all pending: (owner, address).
    pub deliveries: Vec<(OwnerId, EmailAddress)>,
    /// Its `BatchCreated` entry.
    pub activity: super::ActivityEntry,
}
