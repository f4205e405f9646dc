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
    /// batches are revoked when a newer one is issued.
    pub batch: BatchId,
    /// When issued.
    pub issued_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// Live, revoked or redeemed.
    pub state: TokenState,
}

/// A token's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TokenState {
    /// Can be redeemed until it expires.
    Live,
    /// Replaced by a newer invitation, or the owner's email changed.
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
    /// Replaced by a newer invitation or revoked by an email change.
    Revoked,
    /// Already used (by this owner or after the owner registered another way).
    AlreadyUsed,
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenRejection::Unknown => "unknown token",
            TokenRejection::Expired => "expired token",
            TokenRejection::Revoked => "revoked token",
            TokenRejection::AlreadyUsed => "token already used",
        })
    }
}

impl TokenRecord {
    /// Whether it could be redeemed at `now`, and if not, why.
    pub fn check(&self, now: Timestamp) -> Result<(), TokenRejection> {
        match self.state {
            TokenState::Redeemed { .. } => Err(TokenRejection::AlreadyUsed),
            TokenState::Revoked { .. } => Err(TokenRejection::Revoked),
            TokenState::Live if self.expires_at <= now => Err(TokenRejection::Expired),
            TokenState::Live => Ok(()),
        }
    }
}
