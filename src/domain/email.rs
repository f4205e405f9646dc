//! Validated email addresses.

use std::borrow::Cow;
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
    /// Longer than [`MAX_ADDRESS_LEN`] bytes as sent (the domain in its ASCII form).
    #[error("the address is longer than {MAX_ADDRESS_LEN} bytes")]
    TooLong,
    /// A control character (CR, LF, TAB, NUL...) inside the address: it could inject
    /// headers or SMTP commands.
    #[error("the address contains a control character")]
    ControlCharacter,
    /// Not an addr-spec (`local@domain`): no `@`, a local part that is neither a
    /// dot-atom nor one quoted string, or longer than 64 bytes, a domain literal.
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
    /// The domain cannot be converted to its ASCII (IDNA) form, or that form is not
    /// RFC 5321 labels (letters, digits, hyphens; a letter or digit at each end; at most
    /// 63 bytes each, 253 in all).
    #[error("the domain `{domain}` is not a valid international domain name")]
    InvalidDomain {
        /// The domain as given.
        domain: String,
    },
}

/// A validated address (RFC 5322 addr-spec, no display name).
///
/// It keeps the value as given (trimmed) for display, the form put on the wire
/// ([`smtp_form`](Self::smtp_form): the domain in its IDNA form, no needless quoting)
/// and the [`delivered_key`] that equality, hashing and the "shared address" rule
/// compare: two addresses are equal when mail to either reaches one mailbox.
///
/// Most addresses are written in lower case and need no mapping, so all three are the
/// same text: it is kept once (a review of a million recipients holds a million
/// addresses), and the other two only when they differ.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress {
    raw: Box<str>,
    /// `None` when equal to `raw`.
    normalized: Option<Box<str>>,
    /// `None` when equal to `raw`.
    ascii: Option<Box<str>>,
}

/// The symbols RFC 5322 allows in an atom besides letters and digits.
const ATEXT_SYMBOLS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";

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

/// The version of [`delivered_key`]'s rules. It changes whenever the key of some
/// string changes, so a store that keeps keys can tell that they must be computed
/// again (see [`delivered_key`]).
///
/// Version 1 (this one): the delivered address, with the domain mapped by UTS #46 and
/// needless quoting of the local part removed. Before it there was no version: keys
/// were the trimmed, lower-cased text.
pub const DELIVERED_KEY_VERSION: u32 = 1;

/// The comparison key of an address: the mailbox the mail is delivered to, so two
/// strings have the same key exactly when mail to either lands in one mailbox. This
/// is what "the same address" means everywhere in the crate: eligibility's shared
/// email, mass edit's "already used", the repositories' email index, the review.
///
/// For a string that [`EmailAddress::parse`] accepts, the key is its
/// [`smtp_form`](EmailAddress::smtp_form) with the local part lower-cased:
///
/// - white space around the address is dropped;
/// - the domain goes through UTS #46 processing (non-transitional) to its ASCII form,
///   as it is put on the wire: letters are lower-cased, fullwidth forms and other
///   compatibility characters are mapped (`ｅｘａｍｐｌｅ.org` is `example.org`), soft
///   hyphens and other ignored characters are dropped, and a U-label becomes its
///   A-label (`bücher.example` is `xn--bcher-kva.example`, and so is
///   `XN--BCHER-KVA.example`);
/// - quoting that does not change the local part is removed (RFC 5321 4.1.2, RFC 5322
///   3.4.1): `"q"` and `"\q"` are `q`; a local part that only a quoted string can
///   carry (`"a b"`, `"x>y"`) is written as one quoted string that escapes only `"`
///   and `\` (`"x\>y"` is `"x>y"`);
/// - the local part is lower-cased (ASCII; it cannot hold anything else). RFC 5321
///   lets a mail server treat `Ann` and `ann` as two mailboxes, but no server owners
///   use does, and two owners told apart only by case would share one.
///
/// Any other string (an invalid address found in host data) gets its trimmed text
/// with ASCII letters lower-cased, so invalid addresses can be compared too; nothing
/// is ever sent to one, so its key only has to be stable.
///
/// # Contract for stores that keep keys
///
/// - The key depends only on the string, on [`DELIVERED_KEY_VERSION`] and on the
///   UTS #46 data of the `idna` crate this build uses (UTS #46 seldom changes how an
///   assigned character maps; an update that does bumps the version). A store that
///   keeps keys (an indexed column, as the SQLite repository does) must record the
///   version it computed them with and compute every key again when this constant
///   differs from it.
/// - Idempotent: `delivered_key(&delivered_key(s)) == delivered_key(s)` for every
///   string, so keys may be passed where addresses are expected.
/// - Never empty for a string with anything but white space; empty for a blank one.
pub fn delivered_key(raw: &str) -> String {
    let trimmed = raw.trim();
    // The usual address is sent as given but for the domain's case: its key is its
    // text in lower case, made in one allocation.
    if plain_at(trimmed).is_some() {
        return trimmed.to_ascii_lowercase();
    }
    match parts_of(trimmed) {
        Ok(parts) => parts.key(),
        Err(_) => trimmed.to_ascii_lowercase(),
    }
}

/// Where the `@` of a usual address is ([`plain_parts`], within
/// [`MAX_ADDRESS_LEN`]), or `None` for any other string. Such an address holds no
/// control character and is sent as given, the domain lower-cased.
fn plain_at(trimmed: &str) -> Option<usize> {
    if trimmed.len() > MAX_ADDRESS_LEN {
        return None;
    }
    plain_parts(trimmed).map(|(local, _)| local.len())
}

/// An accepted address taken apart: the local part as it goes on the wire (quoting
/// only where needed, case as given) and the domain in its ASCII form (lower case).
struct Parts<'a> {
    local: Cow<'a, str>,
    domain: Cow<'a, str>,
}

impl Parts<'_> {
    fn smtp_form(&self) -> String {
        let mut s = String::with_capacity(self.local.len() + 1 + self.domain.len());
        s.push_str(&self.local);
        s.push('@');
        s.push_str(&self.domain);
        s
    }

    fn key(&self) -> String {
        let mut s = self.smtp_form();
        s[..self.local.len()].make_ascii_lowercase();
        s
    }
}

/// The longest text looked at as an address: a bound on the work done for a value,
/// far above what fits in [`MAX_ADDRESS_LEN`] once sent (a U-label spelled with
/// fullwidth letters takes three bytes a letter before it is mapped).
const MAX_INPUT_LEN: usize = 4 * MAX_ADDRESS_LEN;

/// The longest local part (RFC 5321 4.5.3.1.1), as sent.
const MAX_LOCAL_LEN: usize = 64;

/// Validates a trimmed address and takes it apart: the quick path for the usual
/// address, the full parse for the rest.
fn parts_of(trimmed: &str) -> Result<Parts<'_>, InvalidEmail> {
    if trimmed.is_empty() {
        return Err(InvalidEmail::Empty);
    }
    if trimmed.len() > MAX_INPUT_LEN {
        return Err(InvalidEmail::TooLong);
    }
    if trimmed.chars().any(char::is_control) {
        return Err(InvalidEmail::ControlCharacter);
    }
    if let Some((local, domain)) = plain_parts(trimmed) {
        // Sent as given, so its length is the length sent.
        if trimmed.len() > MAX_ADDRESS_LEN {
            return Err(InvalidEmail::TooLong);
        }
        let domain = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(domain.to_ascii_lowercase())
        } else {
            Cow::Borrowed(domain)
        };
        return Ok(Parts {
            local: Cow::Borrowed(local),
            domain,
        });
    }
    parts_in_full(trimmed)
}

/// The full parse of a trimmed address without control characters: an RFC 5322
/// local part (a dot-atom or one quoted string, ASCII), then the domain through UTS
/// #46 to its ASCII form, which must be RFC 5321 labels.
///
/// The domain is checked after the mapping, not before: a general RFC 5322 parser
/// (the `email_address` crate did this) counts a label's bytes as written, so a
/// Greek or fullwidth spelling of a short label was refused as longer than 63 bytes,
/// and a domain whose dots were ideographic full stops as one long label.
fn parts_in_full(trimmed: &str) -> Result<Parts<'_>, InvalidEmail> {
    let syntax = |reason: &str| InvalidEmail::Syntax {
        reason: reason.to_owned(),
    };
    // The domain cannot hold `@` (it would fail the label check below), so the last
    // one separates, even after a quoted local part holding one.
    let (local, domain) = trimmed
        .rsplit_once('@')
        .ok_or_else(|| syntax("no `@` between a local part and a domain"))?;
    if local.is_empty() {
        return Err(syntax("nothing before `@`"));
    }
    if domain.is_empty() {
        return Err(syntax("nothing after `@`"));
    }
    if !local.is_ascii() {
        return Err(InvalidEmail::NonAsciiLocalPart);
    }
    let local = wire_local_part(local).ok_or_else(|| {
        syntax("the part before `@` is neither a dot-atom nor one non-empty quoted string")
    })?;
    if domain.starts_with('[') {
        return Err(syntax("a domain literal (`[…]`) is not accepted"));
    }
    let invalid_domain = || InvalidEmail::InvalidDomain {
        domain: domain.to_owned(),
    };
    let ascii = idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::EMPTY)
        .map_err(|_| invalid_domain())?;
    // The dot is looked for after the mapping: `example。org` has one.
    if !ascii.contains('.') {
        return Err(InvalidEmail::DomainWithoutDot {
            domain: domain.to_owned(),
        });
    }
    // RFC 5321 4.1.2: letters, digits and hyphens, a letter or digit at each end, at
    // most 63 bytes a label and 253 in all. UTS #46 maps some characters to other
    // ASCII (`⑴` to `(1)`); such a domain cannot be delivered to.
    let is_label = |label: &str| {
        let bytes = label.as_bytes();
        matches!((bytes.first(), bytes.last()), (Some(f), Some(l)) if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric())
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    if ascii.len() > 253 || !ascii.split('.').all(is_label) {
        return Err(invalid_domain());
    }
    if local.len() + 1 + ascii.len() > MAX_ADDRESS_LEN {
        return Err(InvalidEmail::TooLong);
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err(syntax("the part before `@` is longer than 64 bytes"));
    }
    Ok(Parts {
        local,
        domain: ascii,
    })
}

/// The local part as it goes on the wire, from an ASCII local part without control
/// characters: a dot-atom stays as it is; one quoted string (RFC 5322 `qtext`,
/// spaces and quoted pairs) is read, a quoted pair standing for the character after
/// the backslash, and written again: as a dot-atom when its content is one, otherwise
/// quoted with only `"` and `\` escaped. `None` for anything else (an unquoted space,
/// a stray `"`, an empty quoted string, the obsolete `"a".b`).
fn wire_local_part(local: &str) -> Option<Cow<'_, str>> {
    if is_dot_atom(local) {
        return Some(Cow::Borrowed(local));
    }
    let inner = local.strip_prefix('"')?.strip_suffix('"')?;
    let mut content = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => content.push(chars.next()?),
            '"' => return None,
            c => content.push(c),
        }
    }
    if content.is_empty() {
        return None;
    }
    if is_dot_atom(&content) {
        return Some(Cow::Owned(content));
    }
    let mut quoted = String::with_capacity(content.len() + 4);
    quoted.push('"');
    for c in content.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Some(Cow::Owned(quoted))
}

/// RFC 5322 `dot-atom-text` in ASCII: atoms of letters, digits and
/// ``!#$%&'*+-/=?^_`{|}~``, joined by single dots.
fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || ATEXT_SYMBOLS.contains(&b))
        })
}

impl EmailAddress {
    /// Parses and validates an address. Leading and trailing white space is dropped.
    ///
    /// Accepted: an RFC 5322 addr-spec without comments or a domain literal, at most
    /// [`MAX_ADDRESS_LEN`] bytes as sent, whose local part is ASCII (a dot-atom or one
    /// quoted string, at most 64 bytes as sent) and whose domain, after UTS #46
    /// processing, is two or more RFC 5321 labels (letters, digits and hyphens). A local part that only a quoted string can carry
    /// (`"a b"@example.org`) is accepted, and sent and shown exactly in its quoted
    /// form (see [`smtp_form`](Self::smtp_form)).
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let trimmed = raw.trim();
        if let Some(at) = plain_at(trimmed) {
            let mut ascii = trimmed.to_owned();
            ascii[at + 1..].make_ascii_lowercase();
            return Ok(Self::of_forms(trimmed, trimmed.to_ascii_lowercase(), ascii));
        }
        let parts = parts_of(trimmed)?;
        Ok(Self::of_forms(trimmed, parts.key(), parts.smtp_form()))
    }

    /// The three forms, each of the last two kept only when it differs from `raw`.
    fn of_forms(raw: &str, normalized: String, ascii: String) -> Self {
        let unless_raw = |form: String| (form != raw).then(|| form.into_boxed_str());
        Self {
            normalized: unless_raw(normalized),
            ascii: unless_raw(ascii),
            raw: raw.into(),
        }
    }

    /// The address as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The comparison key: [`delivered_key`] of the address.
    pub fn normalized(&self) -> &str {
        self.normalized.as_deref().unwrap_or(&self.raw)
    }

    /// The address as it is put on the wire, in RCPT TO and in the `To`, `From` and
    /// `Reply-To` headers alike: the local part without needless quoting (`"q"` is
    /// sent as `q`; `"a b"` stays quoted, escaping only `"` and `\\`), the domain in its
    /// ASCII (IDNA) form, lower case.
    pub fn smtp_form(&self) -> &str {
        self.ascii.as_deref().unwrap_or(&self.raw)
    }

    /// The domain as given.
    pub fn domain(&self) -> &str {
        self.raw.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl PartialEq for EmailAddress {
    fn eq(&self, other: &Self) -> bool {
        self.normalized() == other.normalized()
    }
}
impl Eq for EmailAddress {}
impl Hash for EmailAddress {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.normalized().hash(state);
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
        a.raw.into_string()
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

    /// `address` under the display name `name`, or with none when `name` cannot be one
    /// (it holds a control character): an owner's message is never held back for their
    /// name. The `To` of every invitation, previewed or sent.
    pub(crate) fn named_or_bare(name: &str, address: &EmailAddress) -> Self {
        Self::new(Some(name), address.clone()).unwrap_or_else(|_| Self {
            name: None,
            address: address.clone(),
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
    use std::collections::BTreeSet;

    #[test]
    fn an_address_written_as_sent_is_kept_once() {
        let plain = EmailAddress::parse(" ann.lee@example.org ").unwrap();
        assert!(plain.normalized.is_none() && plain.ascii.is_none());
        assert_eq!(plain.normalized(), "ann.lee@example.org");
        assert_eq!(plain.smtp_form(), "ann.lee@example.org");
        let mixed = EmailAddress::parse("Ann.Lee@Example.ORG").unwrap();
        assert_eq!(mixed.as_str(), "Ann.Lee@Example.ORG");
        assert_eq!(mixed.normalized(), "ann.lee@example.org");
        assert_eq!(mixed.smtp_form(), "Ann.Lee@example.org");
        assert_eq!(mixed, plain);
    }

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
    fn the_key_is_the_mailbox_mail_is_delivered_to() {
        // Each group delivers to one mailbox.
        for group in [
            &["y@example.org", "y@ｅｘａｍｐｌｅ.org", " Y@EXAMPLE.ORG"][..],
            &[
                "z@example.org",
                "z@exam\u{AD}ple.org",
                "z@ex\u{200B}ample.org",
            ],
            &[
                "x@bücher.example",
                "x@xn--bcher-kva.example",
                "X@XN--BCHER-KVA.Example",
            ],
            &["q@example.org", "\"q\"@example.org", "\"\\q\"@example.org"],
            &[
                "a@example.org",
                "a@example\u{3002}org",
                "a@ＥＸＡＭＰＬＥ．ＯＲＧ",
            ],
            &[
                "\"a b\"@example.org",
                "\"A B\"@Example.org",
                "\"\\a b\"@example.org",
            ],
        ] {
            let keys: BTreeSet<String> = group.iter().map(|a| delivered_key(a)).collect();
            assert_eq!(keys.len(), 1, "{group:?}: {keys:?}");
            for a in group {
                let parsed = EmailAddress::parse(a).unwrap();
                assert_eq!(parsed.normalized(), delivered_key(a), "{a}");
            }
        }
        assert_eq!(delivered_key("\"q\"@Example.org"), "q@example.org");
        assert_eq!(
            delivered_key("\"x>y,z<w\"@example.org"),
            "\"x>y,z<w\"@example.org"
        );
        // Different mailboxes keep different keys.
        let distinct = [
            "a@example.org",
            "\"a \"@example.org",
            "\"a.\"@example.org",
            "a@example.com",
            "a@xn--exmple-cua.org",
            "b@example.org",
        ];
        let keys: BTreeSet<String> = distinct.iter().map(|a| delivered_key(a)).collect();
        assert_eq!(keys.len(), distinct.len(), "{keys:?}");
    }

    #[test]
    fn the_wire_form_drops_needless_quoting_and_keeps_needed_quoting() {
        let cases = [
            ("\"q\"@example.org", "q@example.org"),
            ("\"Q.r\"@example.org", "Q.r@example.org"),
            ("\"a b\"@example.org", "\"a b\"@example.org"),
            ("\"x>y,z<w\"@example.org", "\"x>y,z<w\"@example.org"),
            ("\"x\\>y\"@example.org", "\"x>y\"@example.org"),
            ("\"a\\\"b\"@example.org", "\"a\\\"b\"@example.org"),
            ("\"a..b\"@example.org", "\"a..b\"@example.org"),
            ("Ann+hoa@Bücher.Example", "Ann+hoa@xn--bcher-kva.example"),
        ];
        for (given, wire) in cases {
            let a = EmailAddress::parse(given).unwrap();
            assert_eq!(a.smtp_form(), wire, "{given}");
            assert_eq!(a.as_str(), given);
        }
    }

    #[test]
    fn a_domain_is_letters_digits_and_hyphens_once_mapped() {
        for address in ["a@⑴.example.org", "a@exa_mple.org", "a@exa!mple.org"] {
            assert!(
                matches!(
                    EmailAddress::parse(address),
                    Err(InvalidEmail::InvalidDomain { .. })
                ),
                "{address}: {:?}",
                EmailAddress::parse(address)
            );
        }
        assert!(matches!(
            EmailAddress::parse("a@example\u{3002}"),
            Err(InvalidEmail::InvalidDomain { .. })
        ));
        assert!(matches!(
            EmailAddress::parse("a@-example.org"),
            Err(InvalidEmail::InvalidDomain { .. })
        ));
        assert!(EmailAddress::parse("a@example\u{3002}org").is_ok());
        // Labels are measured as sent: 32 Greek letters are 64 bytes as written, and
        // a much shorter A-label.
        let greek = "αβγδεζηθικλμνξοπρστυφχψωαβγδεζηθ";
        assert!(greek.len() > 63);
        let a = EmailAddress::parse(&format!("a@{greek}.example")).unwrap();
        assert!(a.smtp_form().len() < 60, "{}", a.smtp_form());
        assert!(
            EmailAddress::parse("a@ｅｘａｍｐｌｅｅｘａｍｐｌｅｅｘａｍｐｌｅ\u{3002}org").is_ok()
        );
    }

    #[test]
    fn keys_of_keys_are_the_same_keys() {
        for s in [
            "  Ann@Example.org ",
            "\"Q\"@ｅｘａｍｐｌｅ.org",
            "\"A B\"@Bücher.example",
            "not an address",
            "\"A B\"@LOCALHOST",
            "x@⑴.org",
            "",
        ] {
            let key = delivered_key(s);
            assert_eq!(delivered_key(&key), key, "{s:?}");
        }
        assert_eq!(delivered_key("  "), "");
        assert_eq!(delivered_key(" Not-An-Email "), "not-an-email");
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
            let fast = parts_of(address).unwrap();
            let full = parts_in_full(address).unwrap();
            assert_eq!(
                (fast.smtp_form(), fast.key()),
                (full.smtp_form(), full.key())
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
                    let fast = parts_of(&address).expect("the plain path took it");
                    let full = parts_in_full(&address);
                    prop_assert!(full.is_ok(), "{address:?}: {:?}", full.err());
                    let full = full.unwrap();
                    prop_assert_eq!(
                        (fast.smtp_form(), fast.key()),
                        (full.smtp_form(), full.key())
                    );
                    // The quick forms that `parse` and `delivered_key` build too.
                    if address.len() <= MAX_ADDRESS_LEN {
                        let parsed = EmailAddress::parse(&address).expect("the plain path took it");
                        prop_assert_eq!(parsed.smtp_form(), full.smtp_form());
                        prop_assert_eq!(parsed.normalized(), full.key());
                        prop_assert_eq!(delivered_key(&address), full.key());
                    }
                }
            }
        }
    }
}
