//! The header writer: encoded-words, folding, display names and addresses (the rules
//! are listed in the `mime` module's documentation).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::template::single_line;

/// The length a header or body line should keep within (RFC 5322 2.1.1).
const SOFT_LIMIT: usize = 78;
/// The longest plain word written unencoded in a header; longer ones are encoded so no
/// line can reach RFC 5322's 998-octet limit.
const MAX_PLAIN_WORD: usize = 900;
/// The end of an encoded-word.
const EW_SUFFIX: &str = "?=";
/// The longest encoded-word RFC 2047 allows.
const MAX_ENCODED_WORD: usize = 75;

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
pub(super) fn write_unstructured_header(out: &mut Vec<u8>, name: &str, value: &str) {
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
pub(super) fn write_mailbox_header(
    out: &mut Vec<u8>,
    name: &str,
    display: Option<&str>,
    address: &str,
) {
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
