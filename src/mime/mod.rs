//! One owner's message as RFC 5322 bytes.
//!
//! A batch builds one [`MessageFrame`] (From, Reply-To, the attachments encoded
//! once) and then calls [`MessageFrame::write_message`] for each owner, which only
//! encodes that owner's own headers and bodies and copies the prepared attachment
//! bytes: attachments are checked and encoded once per batch, never once per
//! recipient.
//!
//! # Why the headers are written here and not by mail-builder
//!
//! Every header value this module writes can come from a manager or from the host's
//! owner records (display names, subjects), so the header block must be well formed
//! whatever they hold. The header writer (`mime/headers.rs`) is small enough to check
//! line by line:
//!
//! - control characters (CR, LF, TAB, NUL...) in names and subjects become spaces
//!   before anything else happens, so no input can end a header line;
//! - plain printable ASCII words are written as they are (subject) or as quoted
//!   strings (display name); runs of the other words (non-ASCII, `=?`, very long)
//!   are written as RFC 2047 encoded-words, each at most 75 characters, in Q or B,
//!   whichever is shorter, and **never splitting a word**: boundaries between
//!   encoded-words fall only at spaces of the decoded text, so a reader that shows
//!   a space between two encoded-words (Python's `email.policy.default` in `To`,
//!   Thunderbird, Apple Mail) shows the name whole. Only a word too long for one
//!   encoded-word even in B (45 bytes of UTF-8: a long unspaced Chinese name) is
//!   split, between characters. In a subject the space between two words is encoded
//!   into the first word (white space between encoded-words is not text there); in a
//!   display name it is the white space between the two. A subject with leading,
//!   trailing or repeated spaces is encoded whole so they survive; a display name's
//!   runs of spaces read as one;
//! - lines are folded only at a space between two tokens, so a folded line always
//!   starts with white space and no encoded-word or quoted string is ever split; lines
//!   stay within 78 characters except for a single unbreakable plain word (at most
//!   900 characters, far within the 998 limit; longer words are encoded instead).
//!
//! # mail-builder: tried, and kept to the tests
//!
//! The project named mail-builder as the message builder. Version 2.0.1 was tried on
//! this crate's inputs, with the same independent readers as this writer:
//!
//! - **Display names split inside a word.** Its encoded-words of a long name end
//!   where the bytes run out, not at a space: `Αικατερίνη Ελευθερία Παπαδοπούλου`
//!   reads `… Πα παδοπούλου` in Python's `email.policy.default` (and in the readers
//!   that keep the space between two encoded-words). Checked by
//!   `tests/headers_python.rs` (Python itself) and `tests/mime_messages.rs`.
//! - **Encoded-word text in a subject is left raw.** A subject holding
//!   `=?utf-8?q?Caf=C3=A9?=` as text is written as it is, so every reader decodes it
//!   and the manager's words are lost; this writer encodes such a word.
//! - A plain ASCII subject longer than 77 characters is written as `us-ascii` Q
//!   encoded-words split inside words (legal, but the raw header is unreadable); a
//!   control character in a name is dropped, gluing the words on either side.
//!
//! Its body writer could carry this module's headers and the attachment encoded once
//! (a raw part holding the prepared bytes, with this module's boundaries), but it
//! costs more than the writer here. `benches/message_build.rs` under callgrind, 2,000
//! messages of the e2e letter, less the rendering they share: mail-builder's body
//! alone 57.1 k instructions a message, this module's whole message 67.0 k, of which
//! its body is 40.9 k; with mail-builder's body a message would cost 16 k more, about
//! 4% of a whole send's instructions. Its own boundaries come from the clock and a
//! counter (a message built again is not the same bytes), and its `7bit` text parts
//! leave a line that starts with `.` for the SMTP transport to stuff (this module's
//! quoted-printable encodes that dot, so the transport sends the bytes uncopied).
//!
//! So the message is written here, and mail-builder is a dev-dependency: the tests
//! above fail the day it writes these inputs right, and the bench measures it again.
//!
//! # Boundaries
//!
//! Boundaries are `=_oa…` plus a hash of the Message-ID, so they differ per message,
//! and they can never occur in content either: quoted-printable output never has
//! `=_` (an `=` is always followed by two hex digits or a line break), base64 has
//! neither `-` nor `_`, and every part header line this module writes starts with
//! `Content-` or with a space.
//!
//! # Layout
//!
//! - `mod.rs`: [`MessageFrame`], which puts a message together: the shared headers
//!   and attachments, each owner's headers, the multipart structure;
//! - `headers.rs`: the header writer (encoded-words, folding, display names,
//!   addresses);
//! - `parts.rs`: multipart headers, boundary delimiters, the `text/*` parts;
//! - `encoding.rs`: quoted-printable, base64 lines, the CRLF canonical form;
//! - `attachment.rs`: [`EncodedAttachment`], encoded once per batch;
//! - `ids.rs`: [`MessageIds`] and [`message_id`].

mod attachment;
mod encoding;
mod headers;
mod ids;
mod parts;

use std::fmt;

use sha2::{Digest, Sha256};

pub use attachment::EncodedAttachment;
pub use ids::{MessageIds, message_id};

use crate::domain::{EmailAddress, Mailbox, Timestamp};
use crate::invite::Attachment;
use crate::template::RenderedParts;
use attachment::encode_attachment;
use headers::{write_mailbox_header, write_unstructured_header};
use ids::{is_msg_id_byte, push_hex};
use parts::{
    write_alternative_body, write_close, write_delimiter, write_multipart_header, write_text_part,
};

/// What every message of a batch shares (From, Reply-To, the attachments encoded
/// once), ready to be combined with each owner's parts.
///
/// Build it once per batch and share it (it is `Send + Sync`); writing a message does
/// no attachment encoding at all.
pub struct MessageFrame {
    /// The complete `From:` header line(s), CRLF-terminated.
    from: Vec<u8>,
    /// The complete `Reply-To:` header line, or empty.
    reply_to: Vec<u8>,
    attachments: Vec<EncodedAttachment>,
}

impl fmt::Debug for MessageFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageFrame")
            .field("from", &String::from_utf8_lossy(&self.from))
            .field("reply_to", &String::from_utf8_lossy(&self.reply_to))
            .field("attachments", &self.attachments)
            .finish()
    }
}

impl MessageFrame {
    /// Prepares the shared parts; attachments are encoded here, once.
    ///
    /// File names go through [`sanitize_file_name`](crate::invite::sanitize_file_name)
    /// and are sent as a quoted `filename` when short plain ASCII, otherwise RFC 2231
    /// encoded (`filename*`, split into continuations). A content type that is not `type/subtype` is sent
    /// as `application/octet-stream` (the review reports it before anything is sent).
    pub fn new(
        from: &Mailbox,
        reply_to: Option<&EmailAddress>,
        attachments: &[Attachment],
    ) -> Self {
        let mut from_header = Vec::with_capacity(128);
        write_mailbox_header(
            &mut from_header,
            "From",
            from.name.as_deref(),
            from.address.smtp_form(),
        );
        let mut reply_to_header = Vec::new();
        if let Some(address) = reply_to {
            write_mailbox_header(&mut reply_to_header, "Reply-To", None, address.smtp_form());
        }
        Self {
            from: from_header,
            reply_to: reply_to_header,
            attachments: attachments.iter().map(encode_attachment).collect(),
        }
    }

    /// The attachments as encoded once for the whole batch.
    pub fn encoded_attachments(&self) -> &[EncodedAttachment] {
        &self.attachments
    }

    /// Writes one owner's complete message into `out` (appended; `out` is not
    /// cleared, so a caller can reuse one buffer).
    ///
    /// Headers: From, To (only `to`, with its display name), Reply-To when the frame
    /// has one, Subject, Date, Message-ID (`<message_id>`; characters that cannot be
    /// in a msg-id are dropped), `Auto-Submitted: auto-generated` (so vacation
    /// replies do not answer it), MIME-Version. Body: `multipart/alternative` with
    /// `text/plain` then `text/html` (UTF-8; quoted-printable, or base64 for mostly
    /// non-ASCII text), inside `multipart/mixed` with the prepared attachments when
    /// there are any. CRLF line endings throughout.
    pub fn write_message(
        &self,
        to: &Mailbox,
        message_id: &str,
        date: Timestamp,
        parts: &RenderedParts,
        out: &mut Vec<u8>,
    ) {
        let attachments_len: usize = self
            .attachments
            .iter()
            .map(|a| a.as_bytes().len() + 64)
            .sum();
        out.reserve(1024 + parts.text.len() * 5 / 4 + parts.html.len() * 5 / 4 + attachments_len);
        self.write_common_headers(
            out,
            |out| {
                write_mailbox_header(out, "To", to.name.as_deref(), to.address.smtp_form());
            },
            message_id,
            date,
            &parts.subject,
        );
        let tag = boundary_tag(message_id);
        let alternative = format!("=_oa_alt_{tag}");
        if self.attachments.is_empty() {
            write_multipart_header(out, "alternative", &alternative);
            out.extend_from_slice(b"\r\n");
            write_alternative_body(out, &alternative, parts);
        } else {
            let mixed = format!("=_oa_mix_{tag}");
            write_multipart_header(out, "mixed", &mixed);
            out.extend_from_slice(b"\r\n");
            write_delimiter(out, &mixed, true);
            write_multipart_header(out, "alternative", &alternative);
            out.extend_from_slice(b"\r\n");
            write_alternative_body(out, &alternative, parts);
            for attachment in &self.attachments {
                write_delimiter(out, &mixed, false);
                out.extend_from_slice(attachment.as_bytes());
            }
            write_close(out, &mixed);
        }
    }

    /// Writes a plain-text message (no HTML, no attachments) into `out`: the Summary
    /// recap sent to the batch's summary address after a batch, once: the message as
    /// written (its templates, never an owner's live link) and every recipient with
    /// their outcome.
    ///
    /// Same headers as [`write_message`](Self::write_message), `To` being the bare
    /// `to` address; `subject` is put on one line as there.
    pub fn write_plain(
        &self,
        to: &EmailAddress,
        message_id: &str,
        date: Timestamp,
        subject: &str,
        text: &str,
        out: &mut Vec<u8>,
    ) {
        out.reserve(512 + text.len() * 5 / 4);
        self.write_common_headers(
            out,
            |out| write_mailbox_header(out, "To", None, to.smtp_form()),
            message_id,
            date,
            subject,
        );
        write_text_part(out, "plain", text);
    }

    fn write_common_headers(
        &self,
        out: &mut Vec<u8>,
        write_to: impl FnOnce(&mut Vec<u8>),
        message_id: &str,
        date: Timestamp,
        subject: &str,
    ) {
        out.extend_from_slice(&self.from);
        write_to(out);
        out.extend_from_slice(&self.reply_to);
        write_unstructured_header(out, "Subject", subject);
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(rfc5322_date(date).as_bytes());
        out.extend_from_slice(b"\r\nMessage-ID: <");
        out.extend(message_id.bytes().filter(|&b| is_msg_id_byte(b)));
        // Invitations and recaps are sent by a program: vacation and other automatic
        // replies must not answer them (RFC 3834).
        out.extend_from_slice(b">\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n");
    }
}

fn boundary_tag(message_id: &str) -> String {
    let hash = Sha256::digest(message_id.as_bytes());
    let mut tag = String::with_capacity(24);
    push_hex(&mut tag, &hash[..12]);
    tag
}

fn rfc5322_date(date: Timestamp) -> String {
    use time::format_description::well_known::Rfc2822;
    date.as_offset_date_time()
        .format(&Rfc2822)
        // Rfc2822 cannot format years before 1900; no real send date is one.
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}
