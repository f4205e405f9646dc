//! One owner's message as RFC 5322 bytes.
//!
//! A batch builds one [`MessageFrame`] (From, Reply-To, the attachments encoded
//! once) and then calls [`MessageFrame::write_message`] for each owner, which only
//! encodes that owner's own headers and bodies and copies the prepared attachment
//! bytes (DESIGN rule 9).
//!
//! # Why the headers are written here and not by mail-builder
//!
//! Every header value this module writes can come from a manager or from the host's
//! owner records (display names, subjects), so the header block must be well formed
//! whatever they hold. The writer below is small enough to check line by line:
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
//! mail-builder 2.0.1 folds a long unstructured value by breaking it at a fixed
//! width; this module does not depend on how it treats a long two-word display
//! name, and the tests check this writer's output with the independent `mailparse`.
//!
//! # Boundaries
//!
//! Boundaries are `=_oa…` plus a hash of the Message-ID, so they differ per message,
//! and they can never occur in content either: quoted-printable output never has
//! `=_` (an `=` is always followed by two hex digits or a line break), base64 has
//! neither `-` nor `_`, and every part header line this module writes starts with
//! `Content-` or with a space.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use crate::domain::{BatchId, EmailAddress, Mailbox, OwnerId, Timestamp};
use crate::invite::{Attachment, is_valid_content_type, sanitize_file_name};
use crate::template::{RenderedParts, single_line};

/// The length a header or body line should keep within (RFC 5322 2.1.1).
const SOFT_LIMIT: usize = 78;
/// The longest plain word written unencoded in a header; longer ones are encoded so no
/// line can reach RFC 5322's 998-octet limit.
const MAX_PLAIN_WORD: usize = 900;
/// The end of an encoded-word.
const EW_SUFFIX: &str = "?=";
/// The longest encoded-word RFC 2047 allows.
const MAX_ENCODED_WORD: usize = 75;

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

/// One attachment as a finished MIME body part (headers, blank line, base64 lines),
/// encoded once per batch and copied into every message.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedAttachment {
    file_name: String,
    content_type: String,
    part: Vec<u8>,
}

impl EncodedAttachment {
    /// The name the file is sent under ([`sanitize_file_name`] of the given name, or
    /// `attachment` when nothing usable was left).
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// The content type sent (`application/octet-stream` when the given one was not
    /// valid).
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The encoded body part exactly as it appears in every message: part headers,
    /// a blank line, the base64 lines.
    pub fn as_bytes(&self) -> &[u8] {
        &self.part
    }
}

impl fmt::Debug for EncodedAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedAttachment")
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .field("encoded_len", &self.part.len())
            .finish()
    }
}

impl MessageFrame {
    /// Prepares the shared parts; attachments are encoded here, once.
    ///
    /// File names go through [`sanitize_file_name`] and are sent as a quoted
    /// `filename` when short plain ASCII, otherwise RFC 2231 encoded (`filename*`,
    /// split into continuations). A content type that is not `type/subtype` is sent
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
        let attachments_len: usize = self.attachments.iter().map(|a| a.part.len() + 64).sum();
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
                out.extend_from_slice(&attachment.part);
            }
            write_close(out, &mixed);
        }
    }

    /// Writes a plain-text message (no HTML, no attachments) into `out`: the Summary
    /// recap sent to the batch's summary address after a batch (DESIGN rule 8).
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

/// The Message-ID (without angle brackets) of an owner's message in a batch.
///
/// Deterministic per (batch, owner), so a message sent again after a crash carries
/// the same id (DESIGN rule 5). The left part is `oa.` + 64 bits of a SHA-256 of the
/// batch id + `.` + 128 bits of a SHA-256 of the batch and owner ids, in hex: valid
/// msg-id syntax whatever characters the host's ids hold, different for different
/// owners or batches. The domain is put in its ASCII (IDNA) form; one that cannot be
/// used becomes `owner-access.invalid`.
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

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// Bytes allowed in a msg-id between the angle brackets (dot-atom-text and `@`).
fn is_msg_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.@".contains(&b)
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

// ---------------------------------------------------------------------------
// Header writing

/// Writes one header, folding at spaces between tokens.
struct HeaderWriter<'a> {
    out: &'a mut Vec<u8>,
    column: usize,
    /// Whether the current line already holds a token after the header name.
    has_token: bool,
}

impl<'a> HeaderWriter<'a> {
    fn start(out: &'a mut Vec<u8>, name: &str) -> Self {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        Self {
            out,
            column: name.len() + 1,
            has_token: false,
        }
    }

    /// The column a token would start at if written now without folding.
    fn next_column(&self) -> usize {
        self.column + 1
    }

    /// Writes a space and `token`, or a fold (CRLF, space) and `token` when the line
    /// would grow past 78 characters and already holds a token. `token` never holds
    /// white space or line breaks.
    fn token(&mut self, token: &[u8]) {
        if self.has_token && self.column + 1 + token.len() > SOFT_LIMIT {
            self.out.extend_from_slice(b"\r\n");
            self.column = 0;
        }
        self.out.push(b' ');
        self.out.extend_from_slice(token);
        self.column += 1 + token.len();
        self.has_token = true;
    }

    /// Writes an encoded-word (at most 75 characters), on a fresh line when it
    /// would not fit on this one. Never right after the header name: readers take
    /// that fold for a leading space (the first line may then reach 84 characters,
    /// for a first word of 42 to 45 bytes).
    fn encoded_word(&mut self, word: &str) {
        if self.has_token && self.column + 1 + word.len() > SOFT_LIMIT {
            self.out.extend_from_slice(b"\r\n");
            self.column = 0;
        }
        self.out.push(b' ');
        self.out.extend_from_slice(word.as_bytes());
        self.column += 1 + word.len();
        self.has_token = true;
    }

    /// Room for one token on the current line.
    fn room(&self) -> usize {
        SOFT_LIMIT.saturating_sub(self.next_column())
    }

    /// Writes a run of words (separated by single spaces in the decoded text) as
    /// RFC 2047 encoded-words that never split a word: as many whole words as fit go
    /// into one encoded-word (the first filling the current line when its first word
    /// fits there), each in Q or B, whichever is shorter. Only a word too long for
    /// one encoded-word even in B (45 bytes of UTF-8) is split, between characters.
    ///
    /// The spaces between words: in unstructured text (`Subject`) white space between
    /// two encoded-words is not part of the text (RFC 2047 6.2), so each space is
    /// encoded at the end of the word before it. In a display name (`To`), readers
    /// (Python's `email.policy.default`, Thunderbird, Apple Mail) take each
    /// encoded-word as a word of the phrase and keep the space between them, so the
    /// space is the folding white space between two encoded-words.
    fn encoded_run(&mut self, words: &[&str], kind: Kind) {
        let content = |from: usize, to: usize| -> String {
            let mut c = words[from..to].join(" ");
            if kind == Kind::Text && to < words.len() {
                c.push(' ');
            }
            c
        };
        let mut i = 0;
        while i < words.len() {
            let one = encoded_len(&content(i, i + 1));
            let limit = if one <= self.room().min(MAX_ENCODED_WORD) {
                self.room().min(MAX_ENCODED_WORD)
            } else {
                MAX_ENCODED_WORD
            };
            if one > MAX_ENCODED_WORD {
                self.split_word(&content(i, i + 1));
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < words.len() && encoded_len(&content(i, j + 1)) <= limit {
                j += 1;
            }
            // An empty last word of a subject is a trailing space, already encoded at
            // the end of the word before it.
            let text = content(i, j);
            if !text.is_empty() {
                self.encoded_word(&encode_word(&text));
            }
            i = j;
        }
    }

    /// A word too long for one encoded-word: the first piece fills the current line
    /// (or starts a fresh one when little room is left), the others are full
    /// encoded-words, each holding whole characters (the only place a word is split).
    fn split_word(&mut self, word: &str) {
        let mut limit = if self.room() >= MIN_ENCODED_WORD {
            self.room().min(MAX_ENCODED_WORD)
        } else {
            MAX_ENCODED_WORD
        };
        let mut piece = String::new();
        for c in word.chars() {
            let mut longer = piece.clone();
            longer.push(c);
            if !piece.is_empty() && encoded_len(&longer) > limit {
                self.encoded_word(&encode_word(&piece));
                piece.clear();
                limit = MAX_ENCODED_WORD;
            }
            piece.push(c);
        }
        if !piece.is_empty() {
            self.encoded_word(&encode_word(&piece));
        }
    }

    fn end(self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

/// Where a run of words is: unstructured text, or a display name (a phrase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Phrase,
}

/// The shortest encoded-word worth starting at the end of a line.
const MIN_ENCODED_WORD: usize = 24;

/// The length of `text` as one encoded-word, Q or B, whichever is shorter.
fn encoded_len(text: &str) -> usize {
    EW_OVERHEAD + q_len(text).min(b_len(text))
}

/// `=?utf-8?X?` + `?=`.
const EW_OVERHEAD: usize = 12;

fn q_len(text: &str) -> usize {
    text.chars()
        .map(|c| {
            if is_q_literal(c) || c == ' ' {
                1
            } else {
                3 * c.len_utf8()
            }
        })
        .sum()
}

fn b_len(text: &str) -> usize {
    text.len().div_ceil(3) * 4
}

/// `text` as one encoded-word: Q when it is no longer than B (it stays readable),
/// else B.
fn encode_word(text: &str) -> String {
    let mut word = String::with_capacity(encoded_len(text));
    if q_len(text) <= b_len(text) {
        word.push_str("=?utf-8?q?");
        for c in text.chars() {
            q_encode_char(c, &mut word);
        }
    } else {
        word.push_str("=?utf-8?b?");
        word.push_str(&BASE64.encode(text.as_bytes()));
    }
    word.push_str(EW_SUFFIX);
    word
}

/// Characters Q writes as they are, in a phrase as in text (RFC 2047 5(3)).
fn is_q_literal(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '*' | '+' | '-' | '/')
}

/// RFC 2047 "Q" encoding of one character, using only the characters allowed in an
/// encoded-word inside a phrase (so the same words serve subjects and names).
fn q_encode_char(c: char, out: &mut String) {
    if is_q_literal(c) {
        out.push(c);
    } else if c == ' ' {
        out.push('_');
    } else {
        let mut buf = [0u8; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            push_percentless_hex(out, b);
        }
    }
}

fn push_percentless_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('=');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Whether a header value can be written as it is: printable ASCII words separated by
/// single spaces, no `=?` (it would read as an encoded-word), each word short enough.
fn is_plain_text(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains("  ")
        && !value.contains("=?")
        && value.split(' ').all(|w| w.len() <= MAX_PLAIN_WORD)
}

/// Whether a word can be written as it is: printable ASCII, no `=?` (it would read as
/// an encoded-word), not too long for a line.
fn is_plain_header_word(word: &str, max: usize) -> bool {
    !word.is_empty()
        && word.len() <= max
        && word.bytes().all(|b| (0x21..0x7f).contains(&b))
        && !word.contains("=?")
}

/// An unstructured header (the subject): one line after control characters become
/// spaces; plain ASCII words written as they are, runs of the other words as
/// encoded-words ([`HeaderWriter::encoded_run`]). A value with leading, trailing or
/// repeated spaces is encoded whole, so its spaces survive.
fn write_unstructured_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let value = single_line(value);
    let mut h = HeaderWriter::start(out, name);
    if value.is_empty() {
        // `Subject:` with an empty value.
    } else if is_plain_text(&value) {
        for word in value.split(' ') {
            h.token(word.as_bytes());
        }
    } else {
        let words: Vec<&str> = value.split(' ').collect();
        if words.iter().any(|w| w.is_empty()) {
            h.encoded_run(&words, Kind::Text);
        } else {
            write_runs(&mut h, &words, Kind::Text, |w| {
                is_plain_header_word(w, MAX_PLAIN_WORD)
            });
        }
    }
    h.end();
}

/// Writes words in runs: the plain ones as they are, the others with
/// [`HeaderWriter::encoded_run`].
fn write_runs(
    h: &mut HeaderWriter<'_>,
    words: &[&str],
    kind: Kind,
    is_plain: impl Fn(&str) -> bool,
) {
    let mut i = 0;
    while i < words.len() {
        let plain = is_plain(words[i]);
        let mut j = i + 1;
        while j < words.len() && is_plain(words[j]) == plain {
            j += 1;
        }
        let run = &words[i..j];
        if plain {
            run.iter().for_each(|w| h.token(w.as_bytes()));
        } else {
            h.encoded_run(run, kind);
        }
        i = j;
    }
}

/// A plain display name as quoted strings, as many words each as fit on a line (a
/// quoted string is never folded inside).
fn write_quoted_strings(h: &mut HeaderWriter<'_>, words: &[&str]) {
    let quoted = |words: &[&str]| {
        let mut q = String::with_capacity(64);
        q.push('"');
        for (n, word) in words.iter().enumerate() {
            if n > 0 {
                q.push(' ');
            }
            for c in word.chars() {
                if matches!(c, '"' | '\\') {
                    q.push('\\');
                }
                q.push(c);
            }
        }
        q.push('"');
        q
    };
    let mut i = 0;
    while i < words.len() {
        let mut j = i + 1;
        while j < words.len() && quoted(&words[i..j + 1]).len() <= QUOTED_MAX {
            j += 1;
        }
        h.token(quoted(&words[i..j]).as_bytes());
        i = j;
    }
}

/// The longest quoted string written in a display name (it must fit on a line).
const QUOTED_MAX: usize = 70;

/// A mailbox header with a single address: `Name <address>` or `address`.
fn write_mailbox_header(out: &mut Vec<u8>, name: &str, display: Option<&str>, address: &str) {
    // The address is written exactly as it is sent (RCPT TO gets the same
    // `smtp_form`): a quoted local part keeps its spaces, `<`, `>` and `,`, which only
    // mean something outside its quotes. It is validated and holds no control
    // character; one is dropped anyway, so that no input can ever break the header.
    let address: String = address.chars().filter(|c| !c.is_control()).collect();
    // A display name is words: surrounding white space is not part of it, and runs
    // of spaces inside read as one (a phrase cannot keep them).
    let display = display.map(single_line);
    let words: Vec<&str> = display
        .as_deref()
        .map(|d| d.split(' ').filter(|w| !w.is_empty()).collect())
        .unwrap_or_default();
    let mut h = HeaderWriter::start(out, name);
    if words.is_empty() {
        h.token(address.as_bytes());
    } else {
        write_display_name(&mut h, &words);
        h.token(format!("<{address}>").as_bytes());
    }
    h.end();
}

/// A display name: one quoted string when the whole name is plain ASCII and fits on
/// a line; otherwise atoms (plain words of atext only) as they are and the other
/// words as encoded-words, a word never split between two of them but when it is too
/// long for one (see [`HeaderWriter::encoded_run`]). Quoted strings are not mixed
/// with encoded-words: some readers (mailparse) then keep the quotes.
fn write_display_name(h: &mut HeaderWriter<'_>, words: &[&str]) {
    let whole = words.join(" ");
    if is_plain_text(&whole) && whole.len() + 2 <= QUOTED_MAX {
        write_quoted_strings(h, words);
    } else {
        write_runs(h, words, Kind::Phrase, is_atom);
    }
}

/// An RFC 5322 atom (atext only) that cannot be read as an encoded-word.
fn is_atom(word: &str) -> bool {
    is_plain_header_word(word, QUOTED_MAX)
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
}

// ---------------------------------------------------------------------------
// Bodies

fn write_multipart_header(out: &mut Vec<u8>, subtype: &str, boundary: &str) {
    out.extend_from_slice(b"Content-Type: multipart/");
    out.extend_from_slice(subtype.as_bytes());
    out.extend_from_slice(b";\r\n boundary=\"");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\"\r\n");
}

/// A boundary delimiter line; all but the first are preceded by the CRLF that
/// belongs to the delimiter (RFC 2046 5.1.1).
fn write_delimiter(out: &mut Vec<u8>, boundary: &str, first: bool) {
    if !first {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_close(out: &mut Vec<u8>, boundary: &str) {
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
}

fn write_alternative_body(out: &mut Vec<u8>, boundary: &str, parts: &RenderedParts) {
    write_delimiter(out, boundary, true);
    write_text_part(out, "plain", &parts.text);
    write_delimiter(out, boundary, false);
    write_text_part(out, "html", &parts.html);
    write_close(out, boundary);
}

/// A `text/*` part in UTF-8: quoted-printable, or base64 when more than a third of the
/// bytes would need escaping (mostly non-ASCII text, where QP would triple the size).
/// Line breaks become CRLF (the canonical form of text).
fn write_text_part(out: &mut Vec<u8>, subtype: &str, text: &str) {
    out.extend_from_slice(b"Content-Type: text/");
    out.extend_from_slice(subtype.as_bytes());
    out.extend_from_slice(b"; charset=utf-8\r\n");
    let escaped = escaped_count(text.as_bytes());
    if escaped * 3 > text.len() {
        out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        let canonical = to_crlf(text);
        write_base64_lines(out, canonical.as_bytes());
    } else {
        out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        write_quoted_printable(out, text);
    }
}

/// `\n` and `\r\n` become CRLF; a lone CR is kept (it is content, not a line break).
fn to_crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut prev_cr = false;
    for c in text.chars() {
        if c == '\n' && !prev_cr {
            out.push('\r');
        }
        out.push(c);
        prev_cr = c == '\r';
    }
    out
}

/// Quoted-printable (RFC 2045 6.7): lines at most 76 characters with soft breaks,
/// `\n` or `\r\n` written as a hard CRLF break, a lone CR as `=0D`, white space at the
/// end of a line encoded, and a `.` that would start a line encoded (so the message
/// never needs dot-stuffing on its way to SMTP).
///
/// Runs of bytes that are written as they are (printable ASCII but `=`, and white
/// space inside a line) are copied a line's room at a time; only the other bytes go
/// one by one. That is most of a message's text, and this was the largest single
/// cost of building a message.
fn write_quoted_printable(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + bytes.len() / 32);
    let mut column = 0;
    let mut i = 0;
    while i < bytes.len() {
        let run_end = literal_run_end(bytes, i);
        while i < run_end {
            if column == 0 && bytes[i] == b'.' {
                out.extend_from_slice(b"=2E");
                column = 3;
                i += 1;
                continue;
            }
            // 75 leaves room for the `=` of a soft break.
            let room = 75 - column;
            if room == 0 {
                out.extend_from_slice(b"=\r\n");
                column = 0;
                continue;
            }
            let take = room.min(run_end - i);
            out.extend_from_slice(&bytes[i..i + take]);
            column += take;
            i += take;
        }
        if i < bytes.len() {
            i = write_qp_byte(out, bytes, i, &mut column);
        }
    }
}

/// How many bytes quoted-printable would write as `=XX` wherever they are: non-ASCII
/// and control bytes other than line breaks and tabs. Counted in blocks of 255 into a
/// byte-wide sum, a form the compiler turns into vector code (the plain filter and
/// count went a byte at a time).
fn escaped_count(bytes: &[u8]) -> usize {
    bytes
        .chunks(255)
        .map(|block| {
            let n: u8 = block
                .iter()
                .map(|&b| {
                    u8::from(b >= 0x80)
                        | u8::from(b < 0x20 && b != b'\n' && b != b'\r' && b != b'\t')
                })
                .sum();
            usize::from(n)
        })
        .sum()
}

/// Whether all eight bytes of `word` are written as they are by quoted-printable
/// inside a line: printable ASCII or space, and not `=` (a tab goes the slow way).
/// Exact word-at-a-time tests for "a byte below 0x20", "a byte above 0x7e" and "a
/// byte equal to `=`".
fn is_plain_word(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let above_tilde = (word.wrapping_add(ONES) | word) & HIGHS;
    let equals = word ^ (ONES * u64::from(b'='));
    let has_equals = equals.wrapping_sub(ONES) & !equals & HIGHS;
    below_space | above_tilde | has_equals == 0
}

/// Where the run of bytes starting at `start` that are written as they are ends:
/// printable ASCII other than `=`, and spaces and tabs, less a space or tab just
/// before a line break or the end (which must be encoded).
fn literal_run_end(bytes: &[u8], start: usize) -> usize {
    let mut end = start;
    while let Some(word) = bytes.get(end..end + 8) {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        if !is_plain_word(word) {
            break;
        }
        end += 8;
    }
    end += bytes[end..]
        .iter()
        .position(|&b| !(matches!(b, 33..=126 | b' ' | b'\t') && b != b'='))
        .unwrap_or(bytes.len() - end);
    let at_line_end = match bytes.get(end) {
        None | Some(b'\n') => true,
        Some(b'\r') => bytes.get(end + 1) == Some(&b'\n'),
        Some(_) => false,
    };
    if at_line_end && end > start && matches!(bytes[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    end
}

/// Writes the byte at `i` (one the run left: a line break, `=`, a control or
/// non-ASCII byte, or white space at a line's end); returns where to go on.
fn write_qp_byte(out: &mut Vec<u8>, bytes: &[u8], i: usize, column: &mut usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = bytes[i];
    if b == b'\n' {
        out.extend_from_slice(b"\r\n");
        *column = 0;
        return i + 1;
    }
    if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
        out.extend_from_slice(b"\r\n");
        *column = 0;
        return i + 2;
    }
    if *column + 3 > 75 {
        out.extend_from_slice(b"=\r\n");
        *column = 0;
    }
    out.push(b'=');
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 15)]);
    *column += 3;
    i + 1
}

/// Base64 in lines of 76 characters, each ending in CRLF.
fn write_base64_lines(out: &mut Vec<u8>, bytes: &[u8]) {
    let encoded = BASE64.encode(bytes);
    out.reserve(encoded.len() + encoded.len() / 76 * 2 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

// ---------------------------------------------------------------------------
// Attachments

fn encode_attachment(attachment: &Attachment) -> EncodedAttachment {
    let file_name =
        sanitize_file_name(&attachment.file_name).unwrap_or_else(|| "attachment".to_owned());
    let content_type = if is_valid_content_type(&attachment.content_type) {
        attachment.content_type.to_ascii_lowercase()
    } else {
        "application/octet-stream".to_owned()
    };
    let mut part = Vec::with_capacity(attachment.bytes.len() * 4 / 3 + 512);
    let plain_name = file_name.len() <= 60
        && file_name
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    part.extend_from_slice(b"Content-Type: ");
    part.extend_from_slice(content_type.as_bytes());
    if plain_name {
        part.extend_from_slice(b";\r\n name=\"");
        part.extend_from_slice(file_name.as_bytes());
        part.push(b'"');
    }
    part.extend_from_slice(b"\r\nContent-Disposition: attachment;\r\n ");
    if plain_name {
        part.extend_from_slice(b"filename=\"");
        part.extend_from_slice(file_name.as_bytes());
        part.push(b'"');
    } else {
        write_rfc2231_param(&mut part, "filename", &file_name);
    }
    part.extend_from_slice(b"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    write_base64_lines(&mut part, &attachment.bytes);
    EncodedAttachment {
        file_name,
        content_type,
        part,
    }
}

/// An RFC 2231 parameter `name*=utf-8''…` (percent-encoded UTF-8), split into
/// numbered continuations `name*0*=`, `name*1*=`… on folded lines when long. Each
/// continuation holds whole characters: RFC 2231 lets a reader join the pieces before
/// decoding, but readers that decode each piece alone (mailparse does) lost a
/// character split between two.
fn write_rfc2231_param(out: &mut Vec<u8>, name: &str, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    const CHUNK: usize = 60;
    let mut chunks: Vec<String> = vec![String::new()];
    let mut utf8 = [0u8; 4];
    for c in value.chars() {
        let mut piece = String::with_capacity(12);
        for &b in c.encode_utf8(&mut utf8).as_bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                piece.push(b as char);
            } else {
                piece.push('%');
                piece.push(HEX[usize::from(b >> 4)] as char);
                piece.push(HEX[usize::from(b & 15)] as char);
            }
        }
        let last = chunks.last_mut().expect("never empty");
        if last.len() + piece.len() > CHUNK {
            chunks.push(piece);
        } else {
            last.push_str(&piece);
        }
    }
    if chunks.len() == 1 {
        out.extend_from_slice(format!("{name}*=utf-8''{}", chunks[0]).as_bytes());
        return;
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b";\r\n ");
        }
        let charset = if i == 0 { "utf-8''" } else { "" };
        out.extend_from_slice(format!("{name}*{i}*={charset}{chunk}").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-byte encoder the fast one replaced, kept as its reference: quoted-printable (RFC 2045 6.7): lines at most 76 characters with soft breaks,
    /// `\n` or `\r\n` written as a hard CRLF break, a lone CR as `=0D`, white space at the
    /// end of a line encoded.
    fn reference_quoted_printable(out: &mut Vec<u8>, text: &str) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let bytes = text.as_bytes();
        let mut column = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' {
                out.extend_from_slice(b"\r\n");
                column = 0;
                i += 1;
                continue;
            }
            if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                out.extend_from_slice(b"\r\n");
                column = 0;
                i += 2;
                continue;
            }
            let at_line_end = match bytes.get(i + 1) {
                None | Some(b'\n') => true,
                Some(b'\r') => bytes.get(i + 2) == Some(&b'\n'),
                Some(_) => false,
            };
            let literal = match b {
                b' ' | b'\t' => !at_line_end,
                // A `.` that would start a line is encoded: the message then never needs
                // dot-stuffing, and goes to an SMTP server as it is, uncopied.
                b'.' => column > 0 && column < 75,
                33..=126 => b != b'=',
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            // 75 leaves room for the `=` of a soft break.
            if column + width > 75 {
                out.extend_from_slice(b"=\r\n");
                column = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.push(b'=');
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            column += width;
            i += 1;
        }
    }

    fn decode_qp(encoded: &[u8]) -> String {
        let s = String::from_utf8(encoded.to_vec()).unwrap();
        let joined = s.replace("=\r\n", "");
        let mut out = Vec::new();
        let b = joined.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' {
                out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quoted_printable_round_trips_and_keeps_lines_short() {
        let text = format!(
            "a = b \nünïcödé\t\r\n{}\rtrailing  \n.{}",
            "x".repeat(200),
            "é".repeat(60)
        );
        let mut out = Vec::new();
        write_quoted_printable(&mut out, &text);
        for line in out.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(line.len() <= 76, "{:?}", String::from_utf8_lossy(line));
            assert!(!line.ends_with(b" ") && !line.ends_with(b"\t"));
        }
        assert!(!out.windows(2).any(|w| w == b"=_"));
        assert_eq!(decode_qp(&out), to_crlf(&text));
    }

    proptest::proptest! {
        #[test]
        fn quoted_printable_writes_what_the_per_byte_encoder_wrote(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "word ", ".", "..", " ", "\t", "  ", "\n", "\r\n", "\r", "=",
                    "é", "\u{7f}", "\0", "https://x.org/a?b=c", "ünï ",
                ]),
                0..120,
            ),
            long in 0usize..90,
        ) {
            let text = format!("{}{}", "y".repeat(long), pieces.concat());
            let mut fast = Vec::new();
            write_quoted_printable(&mut fast, &text);
            let mut reference = Vec::new();
            reference_quoted_printable(&mut reference, &text);
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&reference)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn the_word_test_agrees_with_the_byte_rule(
            // Mostly printable, so that both answers come up often.
            word in proptest::collection::vec(
                proptest::prop_oneof![12 => 32u8..=126, 1 => proptest::prelude::any::<u8>()],
                8,
            ),
        ) {
            let by_bytes = word.iter().all(|&b| matches!(b, 32..=126) && b != b'=');
            let word = u64::from_le_bytes(word.try_into().unwrap());
            proptest::prop_assert_eq!(is_plain_word(word), by_bytes);
        }

        #[test]
        fn the_escaped_count_agrees_with_the_byte_rule(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1200)) {
            let by_bytes = bytes
                .iter()
                .filter(|&&b| b >= 0x80 || (b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t')))
                .count();
            proptest::prop_assert_eq!(escaped_count(&bytes), by_bytes);
        }
    }

    #[test]
    fn quoted_printable_never_starts_a_line_with_a_dot() {
        // Dots at every column, and at the start of hard lines: none may start an
        // encoded line, or the message would need dot-stuffing on its way to SMTP.
        for shift in 0..80 {
            let text = format!(".start\n{}{}\n.\n", "y".repeat(shift), ".".repeat(160));
            let mut out = Vec::new();
            write_quoted_printable(&mut out, &text);
            for line in out.split(|&b| b == b'\n') {
                assert!(!line.starts_with(b"."), "{}", String::from_utf8_lossy(&out));
            }
            assert_eq!(decode_qp(&out), to_crlf(&text));
        }
    }

    #[test]
    fn crlf_canonical_form_keeps_lone_cr() {
        assert_eq!(to_crlf("a\nb\r\nc\rd"), "a\r\nb\r\nc\rd");
    }

    #[test]
    fn rfc2231_continuations_never_split_an_escape() {
        let mut out = Vec::new();
        write_rfc2231_param(&mut out, "filename", &"ü".repeat(40));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("filename*0*=utf-8''%C3%BC"), "{s}");
        for seg in s.split(";\r\n ") {
            let value = seg.split_once('=').unwrap().1.trim_start_matches("utf-8''");
            assert_eq!(value.len() % 3, 0, "{seg}");
        }
    }
}
