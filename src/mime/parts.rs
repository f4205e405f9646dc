//! The body's structure: multipart headers, boundary delimiters, and the `text/*`
//! parts with the transfer encoding each one gets.

use super::encoding::{escaped_count, to_crlf, write_base64_lines, write_quoted_printable};
use crate::template::RenderedParts;

pub(super) fn write_multipart_header(out: &mut Vec<u8>, subtype: &str, boundary: &str) {
    out.extend_from_slice(b"Content-Type: multipart/");
    out.extend_from_slice(subtype.as_bytes());
    out.extend_from_slice(b";\r\n boundary=\"");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\"\r\n");
}

/// A boundary delimiter line; all but the first are preceded by the CRLF that
/// belongs to the delimiter (RFC 2046 5.1.1).
pub(super) fn write_delimiter(out: &mut Vec<u8>, boundary: &str, first: bool) {
    if !first {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(super) fn write_close(out: &mut Vec<u8>, boundary: &str) {
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
}

pub(super) fn write_alternative_body(out: &mut Vec<u8>, boundary: &str, parts: &RenderedParts) {
    write_delimiter(out, boundary, true);
    write_text_part(out, "plain", &parts.text);
    write_delimiter(out, boundary, false);
    write_text_part(out, "html", &parts.html);
    write_close(out, boundary);
}

/// A `text/*` part in UTF-8: quoted-printable, or base64 when more than a third of the
/// bytes would need escaping (mostly non-ASCII text, where QP would triple the size).
/// Line breaks become CRLF (the canonical form of text).
pub(super) fn write_text_part(out: &mut Vec<u8>, subtype: &str, text: &str) {
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
