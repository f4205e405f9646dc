//! The invitation a manager edits on the Send Message page, and what can be wrong
//! with it.

use serde::{Deserialize, Serialize};

use crate::domain::{CommunityId, DraftId, EmailAddress, InvalidEmail, InvalidMailbox, Mailbox};
use crate::selection::Selection;

/// The invitation as written: recipients, subject, bodies (handlebars templates using
/// the merge fields of [`crate::template`]), Reply-To, Summary address, attachments.
///
/// Addresses are kept as typed by the manager and checked by the review, so a bad one
/// is reported as a [`Problem`] rather than lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The community the invitation is for.
    pub community: CommunityId,
    /// The owners picked.
    pub selection: Selection,
    /// Subject template (not HTML-escaped; CR and LF refused).
    pub subject: String,
    /// Plain-text body template (not escaped). `None`: made from the HTML body (its
    /// words, links as `text (URL)`: see [`crate::template::html_to_text_template`]),
    /// so both parts carry the same message and the same link.
    pub text_body: Option<String>,
    /// HTML body template (merge values HTML-escaped). `None`: made from the text
    /// body (escaped, one paragraph per blank-line-separated block). With neither
    /// body, the review reports [`Problem::MissingBody`].
    pub html_body: Option<String>,
    /// Reply-To as typed; starts as the community's.
    pub reply_to: Option<String>,
    /// Where one recap goes after the batch (the message as written and each
    /// recipient's outcome), as typed.
    pub summary_to: Option<String>,
    /// Files sent with every message (a welcome package...).
    pub attachments: Vec<Attachment>,
    /// The draft this invite was loaded from or saved as, if any.
    pub draft: Option<DraftId>,
    /// The From mailbox as typed (`Name <address>`); `compose` starts it as the
    /// service's sender, so a draft or batch keeps the one it was written with.
    /// `None` (an invite stored before this field existed): the service's sender.
    #[serde(default)]
    pub from: Option<String>,
    /// The portal's registration page the links are made from, as typed; `compose`
    /// starts it as the service's. `None`: the service's.
    #[serde(default)]
    pub portal_url: Option<String>,
}

impl Invite {
    /// Replaces the subject.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// Replaces the body with a text body; the HTML part is made from it. (The old
    /// HTML body went with the old letter: to give both, use
    /// [`with_bodies`](Self::with_bodies).)
    pub fn with_text_body(mut self, text: impl Into<String>) -> Self {
        self.text_body = Some(text.into());
        self.html_body = None;
        self
    }

    /// Replaces the body with an HTML body; the text part is made from it, so a
    /// text-only reader gets the same letter. (To give both, use
    /// [`with_bodies`](Self::with_bodies).)
    pub fn with_html_body(mut self, html: impl Into<String>) -> Self {
        self.html_body = Some(html.into());
        self.text_body = None;
        self
    }

    /// Replaces the body with a text and an HTML version of one letter (they should
    /// say the same thing: spam filters score alternatives that differ).
    pub fn with_bodies(mut self, text: impl Into<String>, html: impl Into<String>) -> Self {
        self.text_body = Some(text.into());
        self.html_body = Some(html.into());
        self
    }

    /// Sets the Reply-To.
    pub fn with_reply_to(mut self, reply_to: impl Into<String>) -> Self {
        self.reply_to = Some(reply_to.into());
        self
    }

    /// Sets the Summary address.
    pub fn with_summary_to(mut self, summary_to: impl Into<String>) -> Self {
        self.summary_to = Some(summary_to.into());
        self
    }

    /// Adds an attachment.
    pub fn with_attachment(mut self, attachment: Attachment) -> Self {
        self.attachments.push(attachment);
        self
    }

    /// Sets the From mailbox (`Name <address>` or `address`).
    pub fn with_from(mut self, from: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self
    }

    /// Sets the portal's registration page the links are made from.
    pub fn with_portal_url(mut self, url: impl Into<String>) -> Self {
        self.portal_url = Some(url.into());
        self
    }

    /// Replaces the selection.
    pub fn with_selection(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// Checks the parts of the invite that are not templates: addresses, header line
    /// breaks in the subject, attachment limits, file names and content types. Template
    /// problems come from [`crate::template::CompiledTemplate::compile`].
    pub fn check_envelope(&self, limits: &AttachmentLimits) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.subject.contains(['\r', '\n']) {
            problems.push(Problem::LineBreakInHeader {
                field: "Subject".into(),
            });
        }
        if let Some(raw) = self.from.as_deref()
            && let Err(error) = Mailbox::parse(raw)
        {
            problems.push(Problem::InvalidFrom {
                value: raw.to_owned(),
                error,
            });
        }
        if let Some(raw) = self.portal_url.as_deref()
            && check_portal_url(raw).is_err()
        {
            problems.push(Problem::InvalidPortalUrl {
                value: raw.to_owned(),
            });
        }
        if let Some(raw) = self.reply_to.as_deref().filter(|r| !r.trim().is_empty())
            && let Err(error) = EmailAddress::parse(raw)
        {
            problems.push(Problem::InvalidReplyTo {
                value: raw.to_owned(),
                error,
            });
        }
        if let Some(raw) = self.summary_to.as_deref().filter(|r| !r.trim().is_empty())
            && let Err(error) = EmailAddress::parse(raw)
        {
            problems.push(Problem::InvalidSummaryTo {
                value: raw.to_owned(),
                error,
            });
        }
        let mut total = 0usize;
        for attachment in &self.attachments {
            total = total.saturating_add(attachment.bytes.len());
            if attachment.bytes.len() > limits.max_each {
                problems.push(Problem::AttachmentTooLarge {
                    file_name: attachment.file_name.clone(),
                    size: attachment.bytes.len(),
                    limit: limits.max_each,
                });
            }
            if sanitize_file_name(&attachment.file_name).is_none() {
                problems.push(Problem::InvalidAttachmentName {
                    file_name: attachment.file_name.clone(),
                });
            }
            if !is_valid_content_type(&attachment.content_type) {
                problems.push(Problem::InvalidContentType {
                    file_name: attachment.file_name.clone(),
                    content_type: attachment.content_type.clone(),
                });
            }
        }
        if total > limits.max_total {
            problems.push(Problem::AttachmentsTooLarge {
                total,
                limit: limits.max_total,
            });
        }
        problems
    }

    /// The Reply-To, parsed (`None` when blank or invalid: the review reports the
    /// latter).
    pub fn reply_to_address(&self) -> Option<EmailAddress> {
        self.reply_to
            .as_deref()
            .and_then(|r| EmailAddress::parse(r).ok())
    }

    /// The From mailbox, parsed: the invite's, or `default` (the service's sender)
    /// when it has none or it is invalid (the review reports the latter).
    pub fn from_mailbox(&self, default: &Mailbox) -> Mailbox {
        self.from
            .as_deref()
            .and_then(|raw| Mailbox::parse(raw).ok())
            .unwrap_or_else(|| default.clone())
    }

    /// The portal URL the links are made from: the invite's (trimmed), or `default`
    /// (the service's) when it has none or it is invalid (the review reports the
    /// latter).
    pub fn portal_url_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.portal_url
            .as_deref()
            .and_then(|raw| check_portal_url(raw).ok())
            .unwrap_or(default)
    }

    /// The Summary address, parsed (`None` when blank or invalid).
    pub fn summary_address(&self) -> Option<EmailAddress> {
        self.summary_to
            .as_deref()
            .and_then(|r| EmailAddress::parse(r).ok())
    }
}

/// Checks a portal URL: `http://` or `https://`, with something after the scheme, and
/// no white space or control characters. Gives it back trimmed.
pub fn check_portal_url(raw: &str) -> Result<&str, PortalUrlError> {
    let url = raw.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(PortalUrlError)?;
    if rest.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PortalUrlError);
    }
    Ok(url)
}

/// A portal URL that is not an `http(s)://` URL without spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the portal URL must be an http(s) URL without spaces")]
pub struct PortalUrlError;

/// A file sent with every message of a batch. It is checked at review time and
/// encoded once per batch.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name as given; [`sanitize_file_name`] makes the one that is sent.
    pub file_name: String,
    /// The MIME type, e.g. `application/pdf`.
    pub content_type: String,
    /// The content.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl Attachment {
    /// An attachment.
    pub fn new(
        file_name: impl Into<String>,
        content_type: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            file_name: file_name.into(),
            content_type: content_type.into(),
            bytes: bytes.into(),
        }
    }
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Size limits for attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentLimits {
    /// The largest single file, in bytes (default 10 MiB).
    pub max_each: usize,
    /// The largest total per message, in bytes (default 25 MiB).
    pub max_total: usize,
}

impl Default for AttachmentLimits {
    fn default() -> Self {
        Self {
            max_each: 10 * 1024 * 1024,
            max_total: 25 * 1024 * 1024,
        }
    }
}

/// Whether `c` is one of the Unicode direction controls: the bidi marks (U+061C,
/// U+200E, U+200F), embeddings and overrides (U+202A–U+202E) and isolates
/// (U+2066–U+2069).
///
/// They make text show in another order than it is stored: a file sent as
/// `invoice\u{202E}fdp.exe` is shown as `invoiceexe.pdf`. They are removed from
/// attachment file names ([`sanitize_file_name`]) and from the display names and
/// subjects written into headers. The zero-width joiner and non-joiner (U+200D,
/// U+200C) are not among them: emoji sequences and Persian names need them.
pub fn is_direction_mark(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The name a file is sent under: the last path component, control characters and
/// characters that are unsafe on common file systems (`/ \ : * ? " < > |`) replaced
/// by `_`, direction marks ([`is_direction_mark`]) removed, leading dots and
/// surrounding white space removed, at most 120 characters (the extension kept).
/// `None` when nothing usable is left.
pub fn sanitize_file_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !is_direction_mark(*c))
        .map(|c| {
            if c.is_control() || matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim().to_owned();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '_') {
        return None;
    }
    const MAX_CHARS: usize = 120;
    if cleaned.chars().count() <= MAX_CHARS {
        return Some(cleaned);
    }
    let (stem, ext) = match cleaned.rsplit_once('.') {
        Some((stem, ext)) if ext.chars().count() <= 10 => (stem, format!(".{ext}")),
        _ => (cleaned.as_str(), String::new()),
    };
    let keep = MAX_CHARS - ext.chars().count();
    Some(stem.chars().take(keep).collect::<String>() + &ext)
}

/// Whether a content type is `type/subtype` made of RFC 2045 token characters.
pub fn is_valid_content_type(raw: &str) -> bool {
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`{|}~".contains(&b))
    };
    match raw.split_once('/') {
        Some((kind, sub)) => is_token(kind) && is_token(sub),
        None => false,
    }
}

/// Which template a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplatePart {
    /// The subject.
    Subject,
    /// The plain-text body.
    Text,
    /// The HTML body.
    Html,
}

impl std::fmt::Display for TemplatePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TemplatePart::Subject => "subject",
            TemplatePart::Text => "text body",
            TemplatePart::Html => "HTML body",
        })
    }
}

/// Something wrong with an invite as a whole. While a review has any problem, nothing
/// is sent. Each variant says what the manager must change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// A template does not parse.
    #[error("the {part} is not a valid template: {message}")]
    TemplateSyntax {
        /// Which template.
        part: TemplatePart,
        /// The parser's message.
        message: String,
    },
    /// A template names a field that is not a merge field (or uses one in a way that
    /// cannot render).
    #[error("the {part} uses `{field}`, which is not a merge field")]
    UnknownField {
        /// Which template.
        part: TemplatePart,
        /// The name as written.
        field: String,
    },
    /// The invite has neither a text nor an HTML body.
    #[error("the invitation has no body: give a text body, an HTML body or both")]
    MissingBody,
    /// A body does not contain `{{registration_url}}`: the owner could not register.
    #[error("the {part} does not contain the registration link ({{{{registration_url}}}})")]
    MissingRegistrationLink {
        /// Which body.
        part: TemplatePart,
    },
    /// A header value (the subject) contains CR or LF.
    #[error("the {field} contains a line break")]
    LineBreakInHeader {
        /// The header.
        field: String,
    },
    /// The Reply-To is not a valid address.
    #[error("the Reply-To `{value}` is not a valid address: {error}")]
    InvalidReplyTo {
        /// As typed.
        value: String,
        /// Why.
        error: InvalidEmail,
    },
    /// The From is not a valid mailbox.
    #[error("the From `{value}` is not a valid mailbox: {error}")]
    InvalidFrom {
        /// As typed.
        value: String,
        /// Why.
        error: InvalidMailbox,
    },
    /// The portal URL is not an `http(s)://` URL without spaces.
    #[error("the portal URL `{value}` must be an http(s) URL without spaces")]
    InvalidPortalUrl {
        /// As typed.
        value: String,
    },
    /// The Summary address is not a valid address.
    #[error("the Summary address `{value}` is not a valid address: {error}")]
    InvalidSummaryTo {
        /// As typed.
        value: String,
        /// Why.
        error: InvalidEmail,
    },
    /// One attachment is over the per-file limit.
    #[error("the attachment `{file_name}` is {size} bytes, over the limit of {limit}")]
    AttachmentTooLarge {
        /// Its name.
        file_name: String,
        /// Its size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// All attachments together are over the per-message limit.
    #[error("the attachments total {total} bytes, over the limit of {limit}")]
    AttachmentsTooLarge {
        /// Their total size in bytes.
        total: usize,
        /// The limit.
        limit: usize,
    },
    /// Nothing usable is left of an attachment's file name once sanitised.
    #[error("the attachment name `{file_name}` is not usable")]
    InvalidAttachmentName {
        /// As given.
        file_name: String,
    },
    /// An attachment's content type is not `type/subtype`.
    #[error("the attachment `{file_name}` has an invalid content type `{content_type}`")]
    InvalidContentType {
        /// Its name.
        file_name: String,
        /// As given.
        content_type: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Invite {
        Invite {
            community: CommunityId::new("c").unwrap(),
            selection: Selection::new(),
            subject: "Hello".into(),
            text_body: Some("{{registration_url}}".into()),
            html_body: None,
            reply_to: None,
            summary_to: None,
            attachments: vec![],
            draft: None,
            from: None,
            portal_url: None,
        }
    }

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(
            sanitize_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            sanitize_file_name("C:\\x\\a:b.pdf").as_deref(),
            Some("a_b.pdf")
        );
        assert_eq!(sanitize_file_name("..."), None);
        assert_eq!(
            sanitize_file_name("invoice\u{202E}fdp.exe").as_deref(),
            Some("invoicefdp.exe")
        );
        assert_eq!(
            sanitize_file_name("\u{2067}\u{200F}a\u{061C}b\u{2069}.pdf").as_deref(),
            Some("ab.pdf")
        );
        assert_eq!(sanitize_file_name("\u{202E}\u{202C}"), None);
        // Joiners stay: emoji sequences and Persian words need them.
        assert_eq!(
            sanitize_file_name("👩\u{200D}💻 می\u{200C}خواهم.txt").as_deref(),
            Some("👩\u{200D}💻 می\u{200C}خواهم.txt")
        );
        assert_eq!(
            sanitize_file_name("a\r\nb.pdf").as_deref(),
            Some("a__b.pdf")
        );
        let long = format!("{}.pdf", "x".repeat(300));
        let short = sanitize_file_name(&long).unwrap();
        assert_eq!(short.chars().count(), 120);
        assert!(short.ends_with(".pdf"));
    }

    #[test]
    fn envelope_problems_are_typed() {
        let limits = AttachmentLimits {
            max_each: 4,
            max_total: 6,
        };
        let bad = invite()
            .with_subject("Hi\r\nBcc: x@y.org")
            .with_from("Board <board@>")
            .with_portal_url("ftp://portal.example.org")
            .with_reply_to("nope")
            .with_summary_to("also@nope")
            .with_attachment(Attachment::new("a.pdf", "application/pdf", vec![0; 5]))
            .with_attachment(Attachment::new("..", "pdf", vec![0; 2]));
        let problems = bad.check_envelope(&limits);
        let kinds: Vec<_> = problems
            .iter()
            .map(|p| {
                serde_json::to_value(p).unwrap()["problem"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "line_break_in_header",
                "invalid_from",
                "invalid_portal_url",
                "invalid_reply_to",
                "invalid_summary_to",
                "attachment_too_large",
                "invalid_attachment_name",
                "invalid_content_type",
                "attachments_too_large"
            ]
        );
        assert!(invite().check_envelope(&limits).is_empty());
    }
}
