//! Transfer encodings: quoted-printable (written so that no line starts with a `.`),
//! base64 in 76-character lines, and the CRLF canonical form of text.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// `\n` and `\r\n` become CRLF; a lone CR is kept (it is content, not a line break).
pub(super) fn to_crlf(text: &str) -> String {
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
pub(super) fn write_quoted_printable(out: &mut Vec<u8>, text: &str) {
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
pub(super) fn escaped_count(bytes: &[u8]) -> usize {
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
pub(super) fn write_base64_lines(out: &mut Vec<u8>, bytes: &[u8]) {
    let encoded = BASE64.encode(bytes);
    out.reserve(encoded.len() + encoded.len() / 76 * 2 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
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
}
