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
