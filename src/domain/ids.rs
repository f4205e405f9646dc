//! Identifiers. The host's own ids (community, owner, property) are opaque strings it
//! chooses; the crate's ids (batch, draft) are random and minted here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The id is empty or only white space.
    #[error("an id must not be empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    #[error("an id must be at most {MAX_ID_LEN} bytes, this one has {len}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id holds a control character (CR, LF, NUL...), which would corrupt logs,
    /// file names and headers.
    #[error("an id must not contain control characters")]
    ControlCharacter,
}

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 200;

fn check_id(raw: &str) -> Result<String, InvalidId> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(InvalidId::Empty);
    }
    if trimmed.len() > MAX_ID_LEN {
        return Err(InvalidId::TooLong { len: trimmed.len() });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidId::ControlCharacter);
    }
    Ok(trimmed.to_owned())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id: trimmed, non-empty, at most [`MAX_ID_LEN`]
            /// bytes, no control characters.
            pub fn new(raw: impl AsRef<str>) -> Result<Self, InvalidId> {
                check_id(raw.as_ref()).map(Self)
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id! {
    /// A community (an HOA, a building), as the host names it.
    CommunityId
}
string_id! {
    /// One owner record. One record per property: a person who owns two units is two
    /// records with two ids.
    OwnerId
}
string_id! {
    /// A property (unit, lot) as the host names it.
    PropertyId
}
string_id! {
    /// A send batch, minted by [`BatchId::generate`] when a review is sent.
    BatchId
}
string_id! {
    /// A saved draft invitation, minted by [`DraftId::generate`].
    DraftId
}
string_id! {
    /// One run of the send engine: the holder that a claim on a delivery names, minted
    /// by [`SenderId::generate`] when a run starts. Writes about a claimed delivery
    /// count only from the sender that holds the claim (see
    /// [`OwnerRepository`](crate::OwnerRepository)'s leases).
    SenderId
}

fn random_hex(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    let mut out = String::with_capacity(prefix.len() + 32);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl BatchId {
    /// A fresh random batch id (`b-` and 128 random bits in hex).
    pub fn generate() -> Self {
        Self(random_hex("b-"))
    }
}

impl DraftId {
    /// A fresh random draft id (`d-` and 128 random bits in hex).
    pub fn generate() -> Self {
        Self(random_hex("d-"))
    }
}

impl SenderId {
    /// A fresh random sender id (`s-` and 128 random bits in hex): one per run, so
    /// two runs never hold a claim under the same name.
    pub fn generate() -> Self {
        Self(random_hex("s-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_trimmed_and_checked() {
        assert_eq!(OwnerId::new("  o-1 ").unwrap().as_str(), "o-1");
        assert_eq!(OwnerId::new("  "), Err(InvalidId::Empty));
        assert_eq!(OwnerId::new("a\nb"), Err(InvalidId::ControlCharacter));
        assert!(matches!(
            OwnerId::new("x".repeat(MAX_ID_LEN + 1)),
            Err(InvalidId::TooLong { .. })
        ));
    }

    #[test]
    fn generated_ids_differ_and_parse() {
        let a = BatchId::generate();
        let b = BatchId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 34);
        assert_eq!(BatchId::new(a.as_str()).unwrap(), a);
    }

    #[test]
    fn serde_rejects_bad_ids() {
        let bad: Result<OwnerId, _> = serde_json::from_str("\"\"");
        assert!(bad.is_err());
        let good: OwnerId = serde_json::from_str("\"o-7\"").unwrap();
        assert_eq!(good.as_str(), "o-7");
    }
}
