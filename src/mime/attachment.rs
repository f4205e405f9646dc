//! An attachment as a finished body part, encoded once per batch and copied into every
//! message: a file sent to 10,000 owners is base64-encoded once, not 10,000 times.

use std::fmt;

use super::encoding::write_base64_lines;
use crate::invite::{Attachment, is_valid_content_type, sanitize_file_name};

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

pub(super) fn encode_attachment(attachment: &Attachment) -> EncodedAttachment {
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
