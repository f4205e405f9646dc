//! One owner's message as RFC 5322 bytes. (Being written: see the interface.)

use crate::domain::{BatchId, EmailAddress, Mailbox, OwnerId, Timestamp};
use crate::invite::Attachment;
use crate::template::RenderedParts;

/// What every message of a batch shares (From, Reply-To, the attachments encoded
/// once), ready to be combined with each owner's parts.
#[derive(Debug)]
pub struct MessageFrame {
    _private: (),
}

impl MessageFrame {
    /// Prepares the shared parts; attachments are encoded here, once.
    pub fn new(
        _from: &Mailbox,
        _reply_to: Option<&EmailAddress>,
        _attachments: &[Attachment],
    ) -> Self {
        todo!("message frame")
    }

    /// Writes one owner's complete message into `out`.
    pub fn write_message(
        &self,
        _to: &Mailbox,
        _message_id: &str,
        _date: Timestamp,
        _parts: &RenderedParts,
        _out: &mut Vec<u8>,
    ) {
        todo!("message assembly")
    }
}

impl MessageFrame {
    /// Writes a plain-text message (the Summary recap) into `out`.
    pub fn write_plain(
        &self,
        _to: &EmailAddress,
        _message_id: &str,
        _date: Timestamp,
        _subject: &str,
        _text: &str,
        _out: &mut Vec<u8>,
    ) {
        todo!("plain message")
    }
}

/// The Message-ID (without angle brackets) of an owner's message in a batch.
pub fn message_id(_batch: &BatchId, _owner: &OwnerId, _domain: &str) -> String {
    todo!("message id")
}
