//! Message-IDs: deterministic per (batch, owner), so a message sent again after a
//! crash carries the id it had (delivery is at least once, and a copy sent twice is
//! recognisably the same message), and the recap's id beside them.

use sha2::{Digest, Sha256};

use crate::domain::{BatchId, OwnerId};

/// The Message-ID (without angle brackets) of an owner's message in a batch.
///
/// Deterministic per (batch, owner), so a message sent again after a crash carries
/// the same id, and its duplicate can be told for one. The left part is `oa.` + 64
/// bits of a SHA-256 of the batch id + `.` + 128 bits of a SHA-256 of the batch and
/// owner ids, in hex: valid msg-id syntax whatever characters the host's ids hold,
/// different for different owners or batches. The domain is put in its ASCII (IDNA)
/// form; one that cannot be used becomes `owner-access.invalid`.
pub fn message_id(batch: &BatchId, owner: &OwnerId, domain: &str) -> String {
    MessageIds::new(batch, domain).for_owner(owner)
}

/// Makes the Message-IDs of one batch ([`message_id`]): what depends on the batch
/// alone (its hash, the domain's ASCII form) is worked out once, not per recipient.
#[derive(Debug, Clone)]
pub struct MessageIds {
    /// The hash state after the length-prefixed batch id.
    batch_state: Sha256,
    /// `oa.<64 bits of the batch hash>.`
    prefix: String,
    /// `@<domain>`
    suffix: String,
    /// The batch, for the recap's id.
    batch: BatchId,
}

impl MessageIds {
    /// The ids of `batch`'s messages, under `domain`.
    pub fn new(batch: &BatchId, domain: &str) -> Self {
        let batch_hash = Sha256::digest(batch.as_str().as_bytes());
        let mut batch_state = Sha256::new();
        // Length-prefixed so ("ab", "c") and ("a", "bc") cannot collide.
        batch_state.update((batch.as_str().len() as u64).to_be_bytes());
        batch_state.update(batch.as_str().as_bytes());
        let mut prefix = String::with_capacity(20);
        prefix.push_str("oa.");
        push_hex(&mut prefix, &batch_hash[..8]);
        prefix.push('.');
        Self {
            batch_state,
            prefix,
            suffix: format!("@{}", msg_id_domain(domain)),
            batch: batch.clone(),
        }
    }

    /// The domain part, in ASCII.
    pub fn domain(&self) -> &str {
        &self.suffix[1..]
    }

    /// One owner's Message-ID (without angle brackets).
    pub fn for_owner(&self, owner: &OwnerId) -> String {
        let mut both = self.batch_state.clone();
        both.update(owner.as_str().as_bytes());
        let owner_hash = both.finalize();
        let mut id = String::with_capacity(self.prefix.len() + 32 + self.suffix.len());
        id.push_str(&self.prefix);
        push_hex(&mut id, &owner_hash[..16]);
        id.push_str(&self.suffix);
        id
    }

    /// The Message-ID of the batch's Summary recap (without angle brackets):
    /// `<batch id>.summary@<domain>`, one per batch, never one of an owner's (those
    /// start with `oa.`).
    pub fn summary(&self) -> String {
        format!("{}.summary{}", self.batch, self.suffix)
    }
}

fn msg_id_domain(domain: &str) -> String {
    let ascii = idna::domain_to_ascii(domain.trim()).unwrap_or_default();
    let valid = !ascii.is_empty()
        && ascii.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        ascii
    } else {
        "owner-access.invalid".to_owned()
    }
}

pub(super) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// Bytes allowed in a msg-id between the angle brackets (dot-atom-text and `@`).
pub(super) fn is_msg_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.@".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recap_has_its_own_id_under_the_batch_domain() {
        let batch = BatchId::new("b-7f").unwrap();
        let ids = MessageIds::new(&batch, " Bücher.example ");
        assert_eq!(ids.summary(), "b-7f.summary@xn--bcher-kva.example");
        let owner = ids.for_owner(&OwnerId::new("b-7f.summary").unwrap());
        assert!(
            owner.starts_with("oa.") && owner != ids.summary(),
            "{owner}"
        );
        let other = MessageIds::new(&BatchId::new("b-80").unwrap(), "Bücher.example");
        assert_ne!(other.summary(), ids.summary());
    }
}
