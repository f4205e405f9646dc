//! Validated email addresses.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest address accepted, in bytes (RFC 5321's path limit less the brackets).
pub const MAX_ADDRESS_LEN: usize = 254;

/// Why a string is not a usable email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvalidEmail {
    /// Nothing was given, or only white space.
    #[error("the address is empty")]
    Empty,
    /// Longer than [`MAX_ADDRESS_LEN`] bytes.
    #[error("the address is longer than {MAX_ADDRESS_LEN} bytes")]
    TooLong,
    /// A control character (CR, LF, TAB, NUL...) inside the address: it could inject
    /// headers or SMTP commands.
    #[error("the address contains a control character")]
    ControlCharacter,
    /// Not an RFC 5322 addr-spec (`local@domain`), with the parser's reason.
    #[error("not an email address: {reason}")]
    Syntax {
        /// What the parser objected to.
        reason: String,
    },
    /// The domain has no dot (`owner@localhost`): no owner's mailbox lives there.
    #[error("the domain `{domain}` has no dot")]
    DomainWithoutDot {
        /// The domain as given.
        domain: String,
    },
    /// The local part (before `@`) has non-ASCII characters, which plain SMTP cannot
    /// carry.
    #[error("the part before `@` must be ASCII")]
    NonAsciiLocalPart,
    /// The domain cannot be converted to its ASCII (IDNA) form.
    #[error("the domain `{domain}` is not a valid international domain name")]
    InvalidDomain {
        /// The domain as given.
        domain: String,
    },
}

/// A validated address (RFC 5322 addr-spec, no display name).
///
/// It keeps the value as given (trimmed) for display, and a normalised form (trimmed,
/// case-folded) that equality, hashing and the "shared address" rule compare. A
/// non-ASCII domain is allowed and converted to its IDNA form for SMTP
/// ([`EmailAddress::smtp_form`]).
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress {
    raw: String,
    normalized: String,
    ascii: String,
}

/// The local part and domain of the usual address, found in one pass: an ASCII
/// dot-atom of at most 64 bytes before the `@`, and after it two or more
/// letter-digit-hyphen labels of at most 63 bytes (none starting or ending with a
/// hyphen, none with `--` in third and fourth place as IDNA's `xn--` labels have,
/// the last with a letter). `None` for anything else, which takes the full parse.
///
/// Almost every owner's address has this shape, and the full parse (a general RFC
/// 5322 parser, then IDNA) was a tenth of reviewing a community. What this accepts,
/// the full parse accepts with the same result: a property test holds it to that.
fn plain_parts(address: &str) -> Option<(&str, &str)> {
    const ATEXT_SYMBOLS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    let (local, domain) = address.split_once('@')?;
    if local.is_empty() || local.len() > 64 || domain.len() > 253 {
        return None;
    }
    let mut after_dot = true;
    for b in local.bytes() {
        if b == b'.' {
            if after_dot {
                return None;
            }
            after_dot = true;
        } else if b.is_ascii_alphanumeric() || ATEXT_SYMBOLS.contains(&b) {
            after_dot = false;
        } else {
            return None;
        }
    }
    if after_dot {
        return None;
    }
    let mut labels = 0;
    let mut last_has_letter = false;
    for label in domain.split('.') {
        let bytes = label.as_bytes();
        let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
            return None;
        };
        if bytes.len() > 63
            || first == b'-'
            || last == b'-'
            || bytes.get(2..4) == Some(b"--")
            || !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        {
            return None;
        }
        last_has_letter = bytes.iter().any(u8::is_ascii_alphabetic);
        labels += 1;
    }
    (labels >= 2 && last_has_letter).then_some((local, domain))
}

/// The comparison key of an address: trimmed and case-folded. Works on any string, so
/// invalid addresses found in host data can be compared too.
pub fn normalize_address(raw: &str) -> String {
    raw.trim().to_lowercase()
}

impl EmailAddress {
    /// Parses and validates an address. Leading and trailing white space is dropped.
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidEmail::Empty);
        }
        if trimmed.len() > MAX_ADDRESS_LEN {
            return Err(InvalidEmail::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(InvalidEmail::ControlCharacter);
        }
        if let Some((local, domain)) = plain_parts(trimmed) {
            return Ok(Self {
                raw: trimmed.to_owned(),
                normalized: normalize_address(trimmed),
                ascii: format!("{local}@{}", domain.to_ascii_lowercase()),
            });
        }
        Self::parse_in_full(trimmed)
    }

    /// The full parse (RFC 5322 syntax, then IDNA for the domain) of a trimmed address
    /// without control characters.
    fn parse_in_full(trimmed: &str) -> Result<Self, InvalidEmail> {
        let options = email_address::Options {
            minimum_sub_domains: 1,
            allow_domain_literal: false,
            allow_display_text: false,
            allow_long_local_parts: false,
        };
        email_address::EmailAddress::parse_with_options(trimmed, options).map_err(|e| {
            InvalidEmail::Syntax {
                reason: e.to_string(),
            }
        })?;
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or_else(|| InvalidEmail::Syntax {
                reason: "no `@`".into(),
            })?;
        if !local.is_ascii() {
            return Err(InvalidEmail::NonAsciiLocalPart);
        }
        if !domain.contains('.') || domain.ends_with('.') || domain.starts_with('.') {
            return Err(InvalidEmail::DomainWithoutDot {
                domain: domain.to_owned(),
            });
        }
        let ascii_domain =
            idna::domain_to_ascii(domain).map_err(|_| InvalidEmail::InvalidDomain {
                domain: domain.to_owned(),
            })?;
        if ascii_domain.is_empty() {
            return Err(InvalidEmail::InvalidDomain {
                domain: domain.to_owned(),
            });
        }
        Ok(Self {
            raw: trimmed.to_owned(),
            normalized: normalize_address(trimmed),
            ascii: format!("{local}@{ascii_domain}"),
        })
    }

    /// The address as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The comparison key: trimmed and case-folded.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The form to put on the wire: the domain in its ASCII (IDNA) form.
    pub fn smtp_form(&self) -> &str {
        &self.ascii
    }

    /// The domain as given.
    pub fn domain(&self) -> &str {
        self.raw.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl PartialEq for EmailAddress {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}
impl Eq for EmailAddress {}
impl Hash for EmailAddress {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.normalized.hash(state);
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({:?})", self.raw)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for EmailAddress {
    type Err = InvalidEmail;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = InvalidEmail;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EmailAddress> for String {
    fn from(a: EmailAddress) -> String {
        a.raw
    }
}

/// A sender or recipient with an optional display name (`Owner Portal <no-reply@x.org>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// The display name; CR and LF are refused when the mailbox is built.
    pub name: Option<String>,
    /// The address.
    pub address: EmailAddress,
}

/// Why a mailbox was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvalidMailbox {
    /// The address part is invalid.
    #[error(transparent)]
    Address(#[from] InvalidEmail),
    /// The display name holds CR, LF or another control character.
    #[error("the display name contains a control character")]
    ControlCharacterInName,
    /// `Name <address` without the closing bracket, or text after it.
    #[error("malformed mailbox: expected `Name <address>` or `address`")]
    Malformed,
}

impl Mailbox {
    /// A mailbox from a display name and an address.
    pub fn new(name: Option<&str>, address: EmailAddress) -> Result<Self, InvalidMailbox> {
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        if name.is_some_and(|n| n.chars().any(char::is_control)) {
            return Err(InvalidMailbox::ControlCharacterInName);
        }
        Ok(Self {
            name: name.map(str::to_owned),
            address,
        })
    }

    /// Parses `address` or `Display Name <address>` (the name may be in double quotes).
    pub fn parse(raw: &str) -> Result<Self, InvalidMailbox> {
        let raw = raw.trim();
        match raw.rfind('<') {
            None => Ok(Self::new(None, EmailAddress::parse(raw)?)?),
            Some(open) => {
                let rest = &raw[open + 1..];
                let close = rest.find('>').ok_or(InvalidMailbox::Malformed)?;
                if !rest[close + 1..].trim().is_empty() {
                    return Err(InvalidMailbox::Malformed);
                }
                let name = raw[..open].trim().trim_matches('"');
                Self::new(Some(name), EmailAddress::parse(&rest[..close])?)
            }
        }
    }
}

impl FromStr for Mailbox {
    type Err = InvalidMailbox;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "\"{}\" <{}>", name.replace('"', "'"), self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_international_addresses() {
        let a = EmailAddress::parse("  Jane.Doe@Example.ORG ").unwrap();
        assert_eq!(a.as_str(), "Jane.Doe@Example.ORG");
        assert_eq!(a.normalized(), "jane.doe@example.org");
        assert_eq!(a, EmailAddress::parse("jane.doe@example.org").unwrap());
        let idn = EmailAddress::parse("owner@bücher.example").unwrap();
        assert_eq!(idn.smtp_form(), "owner@xn--bcher-kva.example");
    }

    #[test]
    fn refuses_what_cannot_be_delivered() {
        assert_eq!(EmailAddress::parse(" "), Err(InvalidEmail::Empty));
        assert!(matches!(
            EmailAddress::parse("owner@localhost"),
            Err(InvalidEmail::DomainWithoutDot { .. })
        ));
        assert_eq!(
            EmailAddress::parse("a@b.org\r\nBcc: x@y.org"),
            Err(InvalidEmail::ControlCharacter)
        );
        assert!(matches!(
            EmailAddress::parse("not-an-address"),
            Err(InvalidEmail::Syntax { .. })
        ));
        assert!(matches!(
            EmailAddress::parse("two@@example.org"),
            Err(InvalidEmail::Syntax { .. })
        ));
        assert_eq!(
            EmailAddress::parse("jürgen@example.org"),
            Err(InvalidEmail::NonAsciiLocalPart)
        );
        assert_eq!(
            EmailAddress::parse(&format!("{}@example.org", "a".repeat(250))),
            Err(InvalidEmail::TooLong)
        );
    }

    #[test]
    fn mailbox_parses_names_and_refuses_header_injection() {
        let m = Mailbox::parse("Owner Portal <no-reply@example.com>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Owner Portal"));
        assert_eq!(m.address.as_str(), "no-reply@example.com");
        assert!(Mailbox::parse("plain@example.com").unwrap().name.is_none());
        assert_eq!(
            Mailbox::new(Some("Evil\r\nBcc: x@y.org"), m.address.clone()),
            Err(InvalidMailbox::ControlCharacterInName)
        );
        assert_eq!(
            Mailbox::parse("A <a@example.com"),
            Err(InvalidMailbox::Malformed)
        );
    }

    #[test]
    fn usual_addresses_take_the_plain_path_and_agree_with_the_full_parse() {
        for address in [
            "owner12@example.org",
            "Jane.Doe@Example.ORG",
            "o'brien+hoa@mail.example.co.uk",
            "a_b-c@x-y.example",
        ] {
            assert!(plain_parts(address).is_some(), "{address}");
            let fast = EmailAddress::parse(address).unwrap();
            let full = EmailAddress::parse_in_full(address).unwrap();
            assert_eq!(
                (fast.raw, fast.normalized, fast.ascii),
                (full.raw, full.normalized, full.ascii)
            );
        }
        for address in [
            "a..b@example.org",
            ".a@example.org",
            "a@-example.org",
            "a@xn--bcher-kva.example",
            "a@example.123",
            "a@localhost",
            "zoë@example.org",
            "a@exämple.org",
            "\"a b\"@example.org",
        ] {
            assert!(plain_parts(address).is_none(), "{address}");
        }
    }

    mod plain_path {
        use super::*;
        use proptest::prelude::*;

        fn text(chars: &'static str, len: std::ops::Range<usize>) -> BoxedStrategy<String> {
            prop::collection::vec(prop::sample::select(chars.chars().collect::<Vec<_>>()), len)
                .prop_map(|v| v.into_iter().collect())
                .boxed()
        }

        fn domain() -> impl Strategy<Value = String> {
            let label = prop_oneof![
                4 => text("abcXYZ019-", 0..8),
                1 => text("abcXYZ019-", 0..70),
                1 => text("ab-é_ ", 1..5),
                1 => text("abc", 1..4).prop_map(|l| format!("xn--{l}")),
                1 => Just("ab--c".to_owned()),
            ];
            prop::collection::vec(label, 1..5).prop_map(|labels| labels.join("."))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]
            /// Whatever the plain path takes, the full parse takes too, with the
            /// same stored forms.
            #[test]
            fn agrees_with_the_full_parse(
                local in prop_oneof![
                    4 => text("abcXYZ09.+_-'=", 0..12),
                    1 => text("ab.!#$%&*/?^`{|}~\"(),:;<>[]\\ é@", 0..12),
                    1 => text("ab", 60..70),
                ],
                domain in domain(),
            ) {
                let address = format!("{local}@{domain}");
                if plain_parts(&address).is_some() {
                    let fast = EmailAddress::parse(&address).expect("the plain path took it");
                    let full = EmailAddress::parse_in_full(&address);
                    prop_assert!(full.is_ok(), "{address:?}: {full:?}");
                    let full = full.unwrap();
                    prop_assert_eq!(
                        (fast.raw, fast.normalized, fast.ascii),
                        (full.raw, full.normalized, full.ascii)
                    );
                }
            }
        }
    }
}
