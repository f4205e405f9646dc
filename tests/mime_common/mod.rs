//! Checks of raw message bytes shared by the MIME tests.

#![allow(dead_code)]

use mailparse::{MailAddr, MailHeaderMap, ParsedMail};

/// The header block: everything before the first empty line (without its CRLF).
pub fn header_block(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block ends with an empty line");
    &message[..end + 2]
}

/// Every line of `bytes` ends in CRLF, no CR or LF stands alone, no line is longer
/// than 998 octets, every byte is ASCII.
pub fn assert_wire_lines(bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        assert!(b.is_ascii(), "non-ASCII byte {b:#x} at {i}");
        if b == b'\r' {
            assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
        if b == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}");
        }
    }
    for line in bytes.split(|&b| b == b'\n') {
        assert!(
            line.len() <= 999,
            "line over 998 octets: {} bytes",
            line.len() - 1
        );
    }
}

/// A well-formed header block: wire lines as above; each line is either a field
/// (`Name: value`, name of printable ASCII without `:`) or a continuation starting
/// with white space that is not only white space; every encoded-word is at most 75
/// characters and lies within one line.
pub fn assert_header_block(message: &[u8]) {
    let block = header_block(message);
    assert_wire_lines(block);
    let text = std::str::from_utf8(block).unwrap();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            assert!(!line.trim().is_empty(), "whitespace-only continuation line");
        } else {
            let (name, _) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header field: {line:?}"));
            assert!(
                !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)),
                "bad field name {name:?}"
            );
        }
        for token in line.split([' ', '\t']) {
            if let Some(start) = token.find("=?") {
                let word = &token[start..];
                assert!(
                    word.ends_with("?="),
                    "encoded-word split or glued: {token:?}"
                );
                assert!(word.len() <= 75, "encoded-word over 75: {word:?}");
            }
        }
    }
}

/// The value of the single header `name`; fails if it is missing or repeated.
pub fn single_header(mail: &ParsedMail<'_>, name: &str) -> String {
    let all = mail.headers.get_all_values(name);
    assert_eq!(all.len(), 1, "{name} should appear once: {all:?}");
    all.into_iter().next().unwrap()
}

/// The one mailbox of header `name` as (display name, address); fails unless the
/// header holds exactly one address.
pub fn single_mailbox(mail: &ParsedMail<'_>, name: &str) -> (Option<String>, String) {
    let headers: Vec<_> = mail
        .headers
        .iter()
        .filter(|h| h.get_key_ref().eq_ignore_ascii_case(name))
        .collect();
    assert_eq!(headers.len(), 1, "{name} should appear once");
    let list = mailparse::addrparse_header(headers[0]).expect("address header parses");
    assert_eq!(list.len(), 1, "{name} should hold one address: {list:?}");
    match &list[0] {
        MailAddr::Single(info) => (info.display_name.clone(), info.addr.clone()),
        MailAddr::Group(g) => panic!("{name} is a group: {g:?}"),
    }
}

/// CRLF and LF compared alike: text parts are sent in canonical CRLF form.
pub fn lf(s: &str) -> String {
    s.replace("\r\n", "\n")
}

/// A display name as readers that take each encoded-word as a word of the phrase
/// read it (Python's `email.policy.default` in `To`, Thunderbird, Apple Mail): the
/// header's tokens before `<address>`, each encoded-word decoded on its own (with
/// mailparse), quoted strings unquoted, joined by one space.
pub fn phrase_reading(message: &[u8], name: &str) -> Option<String> {
    let head = std::str::from_utf8(header_block(message)).unwrap();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let prefix = format!("{name}:");
    let value = unfolded
        .split("\r\n")
        .find(|l| l.len() > prefix.len() && l[..prefix.len()].eq_ignore_ascii_case(&prefix))?
        [prefix.len()..]
        .trim();
    let phrase = value.rsplit_once('<').map_or("", |(p, _)| p).trim();
    if phrase.is_empty() {
        return None;
    }
    let mut words = Vec::new();
    let mut rest = phrase;
    while !rest.is_empty() {
        rest = rest.trim_start();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            out.push(e);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            words.push(out);
            rest = &quoted[end..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            let token = &rest[..end];
            let decoded = if token.starts_with("=?") {
                decode_encoded_word(token)
            } else {
                token.to_owned()
            };
            words.push(decoded);
            rest = &rest[end..];
        }
    }
    Some(words.join(" "))
}

/// A name's words as a display name keeps them: control characters as spaces, runs
/// of spaces as one, none around.
pub fn name_words(name: &str) -> String {
    owner_access::template::single_line(name)
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a word is too long for one encoded-word even in its shorter encoding
/// (Q or B, RFC 2047 limits), so the writer must split it: an independent model of
/// the rule, for the tests' expectations.
pub fn is_over_long(word: &str) -> bool {
    let q: usize = word
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!*+-/ ".contains(c) {
                1
            } else {
                3 * c.len_utf8()
            }
        })
        .sum();
    let b = word.len().div_ceil(3) * 4;
    12 + q.min(b) > 75
}

/// One RFC 2047 encoded-word in UTF-8, decoded (an independent decoder: Q by hand,
/// B with the base64 crate). Panics on anything else.
pub fn decode_encoded_word(token: &str) -> String {
    use base64::Engine as _;
    let inner = token
        .strip_prefix("=?")
        .and_then(|t| t.strip_suffix("?="))
        .unwrap_or_else(|| panic!("not an encoded-word: {token}"));
    let mut parts = inner.splitn(3, '?');
    let (charset, encoding, text) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    assert!(charset.eq_ignore_ascii_case("utf-8"), "{token}");
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_else(|e| panic!("{token}: {e}")),
        "q" | "Q" => {
            let mut out = Vec::new();
            let b = text.as_bytes();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'_' => out.push(b' '),
                    b'=' => {
                        out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                        i += 2;
                    }
                    c => out.push(c),
                }
                i += 1;
            }
            out
        }
        other => panic!("unknown encoding {other} in {token}"),
    };
    String::from_utf8(bytes).unwrap_or_else(|_| panic!("{token} splits a character"))
}
