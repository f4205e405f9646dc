//! Registration tokens as stored: a hash, never the token.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{BatchId, OwnerId, Timestamp};

/// The SHA-256 of a registration token: the only form a token is stored in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..12])
    }
}

/// One issued registration link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's hash.
    pub hash: TokenHash,
    /// Whose link it is.
    pub owner: OwnerId,
    /// The batch whose message carries it. Several tokens of one owner may share a
    /// batch (a message re-sent by `resume` after a crash carries a fresh token and
    /// the copy that may already have been delivered keeps working); tokens of other
    /// batches are revoked when a message of a newer batch is accepted.
    pub batch: BatchId,
    /// When issued.
    pub issued_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// The address the message carrying it was sent to (the delivery's). The link
    /// works only while the owner's primary email is this address, compared by
    /// [`delivered_key`](super::delivered_key) when it is checked: a changed email
    /// stops it without a write to the store, and a change back to the same mailbox
    /// (A → B → A outside the crate) makes it usable again by that mailbox.
    #[serde(default)]
    pub sent_to: String,
    /// Pending, live, revoked or redeemed.
    pub state: TokenState,
}

/// A token's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TokenState {
    /// Stored for a message that has not been accepted yet: the send engine issues a
    /// token when it claims the delivery, before the message goes out. It cannot be
    /// redeemed ([`TokenRejection::NotSent`]) and revokes nothing; it becomes `Live`,
    /// and supersedes the owner's links of other batches, when the delivery is
    /// recorded as sent. A run that stops, fails or crashes before that leaves it
    /// pending, and the owner's older link working.
    Pending,
    /// Can be redeemed until it expires.
    Live,
    /// Superseded (a message of a newer batch to the owner was accepted), the owner's
    /// email changed, or the owner registered with another link.
    Revoked {
        /// When.
        at: Timestamp,
    },
    /// Used to register.
    Redeemed {
        /// When.
        at: Timestamp,
    },
}

/// Why a token does not work. Callers show owners one generic message for all of
/// these (no enumeration); the precise reason is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRejection {
    /// Empty, malformed, or not issued by us.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Superseded by a newer accepted invitation, or revoked by an email change or by
    /// a registration through another link.
    Revoked,
    /// Already used (by this owner or after the owner registered another way).
    AlreadyUsed,
    /// Its message has not been accepted by the transport yet (the token is
    /// [`TokenState::Pending`]): nobody should hold it, and it works only once its
    /// delivery is recorded as sent.
    NotSent,
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenRejection::Unknown => "unknown token",
            TokenRejection::Expired => "expired token",
            TokenRejection::Revoked => "revoked token",
            TokenRejection::AlreadyUsed => "token already used",
            TokenRejection::NotSent => "token of a message not sent yet",
        })
    }
}

impl TokenRecord {
    /// Whether it could be redeemed at `now`, and if not, why. A pending token is
    /// `NotSent` whatever its expiry.
    pub fn check(&self, now: Timestamp) -> Result<(), TokenRejection> {
        match self.state {
            TokenState::Pending => Err(TokenRejection::NotSent),
            TokenState::Redeemed { .. } => Err(TokenRejection::AlreadyUsed),
            TokenState::Revoked { .. } => Err(TokenRejection::Revoked),
            TokenState::Live if self.expires_at <= now => Err(TokenRejection::Expired),
            TokenState::Live => Ok(()),
        }
    }
}
