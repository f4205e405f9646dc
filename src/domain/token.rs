//! Registration tokens: made from the OS random source, shown to the owner once (in
//! their link), stored only as a SHA-256 hash ([`TokenHash`], in a [`TokenRecord`]).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use serde::{Deserialize, Serialize};

use super::{BatchId, OwnerId, Timestamp};

/// Random bytes in a token: 256 bits.
pub const TOKEN_BYTES: usize = 32;

/// The length of a token's text: URL-safe base64 of 32 bytes, no padding.
pub const TOKEN_CHARS: usize = 43;

/// A registration token in clear. It exists only in memory, in the owner's message,
/// and in the owner's hands; its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationToken(String);

impl RegistrationToken {
    /// A fresh token: 256 bits from the operating system's random source.
    ///
    /// # Panics
    /// When the OS random source fails, which leaves no safe way to go on.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A stand-in shown in previews, where no token is minted. It has the shape of no
    /// real token, so it can never be redeemed.
    pub(crate) fn placeholder() -> Self {
        Self("PREVIEW-no-token-is-minted-for-a-preview".into())
    }

    /// The token's text, as it goes into the link.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash that is stored.
    pub fn hash(&self) -> TokenHash {
        hash_token(&self.0)
    }
}

impl fmt::Debug for RegistrationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistrationToken(…)")
    }
}

/// The stored form of a token's text. Any string hashes; one that was never issued
/// simply matches nothing.
pub fn hash_token(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// Whether a string has the shape of a token we issue (43 URL-safe base64
/// characters). Lets `verify` and `redeem` refuse junk without a store lookup.
pub fn looks_like_token(token: &str) -> bool {
    token.len() == TOKEN_CHARS && token.bytes().all(is_token_byte)
}

/// A character of a token's text: the URL-safe base64 alphabet (`A-Z`, `a-z`, `0-9`,
/// `-`, `_`), none of which a URL escapes, so a token stands in a link as it is.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The token a registration link carries: the value of its `token` query parameter
/// (after `?` or `&`, as [`registration_link`] writes it), found in the link itself or
/// in any text that holds one, such as the text part of an invitation. The first such
/// value with a token's shape ([`looks_like_token`]) is returned.
///
/// `None` when the text has no such parameter, or only values that are no token this
/// crate issues: a preview's placeholder link, say, or a link cut short. What a host
/// needs where it reads links back, in its tests or its support tools; its
/// registration page gets the parameter from its web framework instead.
///
/// ```
/// use owner_access::token::{RegistrationToken, registration_link, token_from_link};
///
/// let token = RegistrationToken::generate();
/// let text = format!(
///     "Register here:\n{}\n",
///     registration_link("https://portal.example.org/register?c=oak", &token)
/// );
/// assert_eq!(token_from_link(&text), Some(token.expose()));
/// assert_eq!(token_from_link("https://portal.example.org/register?token=short"), None);
/// ```
pub fn token_from_link(text: &str) -> Option<&str> {
    const KEY: &str = "token=";
    let mut searched = 0;
    while let Some(found) = text[searched..].find(KEY) {
        let key_at = searched + found;
        let value_at = key_at + KEY.len();
        let value = &text[value_at..];
        let end = value
            .bytes()
            .position(|b| !is_token_byte(b))
            .unwrap_or(value.len());
        let is_parameter = matches!(text[..key_at].bytes().last(), Some(b'?' | b'&'));
        if is_parameter && looks_like_token(&value[..end]) {
            return Some(&value[..end]);
        }
        searched = value_at;
    }
    None
}

/// The owner's personal link: `<portal url>?token=<TOKEN>`, or `&token=` when the URL
/// already has a query. A fragment (`#...`) stays at the end.
pub fn registration_link(portal_url: &str, token: &RegistrationToken) -> String {
    let (base, fragment) = match portal_url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (portal_url, None),
    };
    let separator = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut link = format!("{base}{separator}token={}", token.expose());
    if let Some(fragment) = fragment {
        link.push('#');
        link.push_str(fragment);
    }
    link
}

// Tokens as stored: a hash, never the token.

/// The SHA-256 of a registration token: the only form a token is stored in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..12])
    }
}

/// One issued registration link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's hash.
    pub hash: TokenHash,
    /// Whose link it is.
    pub owner: OwnerId,
    /// The batch whose message carries it. Several tokens of one owner may share a
    /// batch (a message re-sent by `resume` after a crash carries a fresh token and
    /// the copy that may already have been delivered keeps working); tokens of other
    /// batches are revoked when a message of a newer batch is accepted.
    pub batch: BatchId,
    /// When issued.
    pub issued_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// The address the message carrying it was sent to (the delivery's). The link
    /// works only while the owner's primary email is this address, compared by
    /// [`delivered_key`](super::delivered_key) when it is checked: a changed email
    /// stops it without a write to the store, and a change back to the same mailbox
    /// (A → B → A outside the crate) makes it usable again by that mailbox.
    #[serde(default)]
    pub sent_to: String,
    /// Pending, live, revoked or redeemed.
    pub state: TokenState,
}

/// A token's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TokenState {
    /// Stored for a message that has not been accepted yet: the send engine issues a
    /// token when it claims the delivery, before the message goes out. It cannot be
    /// redeemed ([`TokenRejection::NotSent`]) and revokes nothing; it becomes `Live`,
    /// and supersedes the owner's links of other batches, when the delivery is
    /// recorded as sent. A run that stops, fails or crashes before that leaves it
    /// pending, and the owner's older link working.
    Pending,
    /// Can be redeemed until it expires.
    Live,
    /// Superseded (a message of a newer batch to the owner was accepted), the owner's
    /// email changed, or the owner registered with another link.
    Revoked {
        /// When.
        at: Timestamp,
    },
    /// Used to register.
    Redeemed {
        /// When.
        at: Timestamp,
    },
}

/// Why a token does not work. Callers show owners one generic message for all of
/// these (no enumeration); the precise reason is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRejection {
    /// Empty, malformed, or not issued by us.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Superseded by a newer accepted invitation, or revoked by an email change or by
    /// a registration through another link.
    Revoked,
    /// Already used (by this owner or after the owner registered another way).
    AlreadyUsed,
    /// Its message has not been accepted by the transport yet (the token is
    /// [`TokenState::Pending`]): nobody should hold it, and it works only once its
    /// delivery is recorded as sent.
    NotSent,
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenRejection::Unknown => "unknown token",
            TokenRejection::Expired => "expired token",
            TokenRejection::Revoked => "revoked token",
            TokenRejection::AlreadyUsed => "token already used",
            TokenRejection::NotSent => "token of a message not sent yet",
        })
    }
}

impl TokenRecord {
    /// Whether it could be redeemed at `now`, and if not, why. A pending token is
    /// `NotSent` whatever its expiry.
    pub fn check(&self, now: Timestamp) -> Result<(), TokenRejection> {
        match self.state {
            TokenState::Pending => Err(TokenRejection::NotSent),
            TokenState::Redeemed { .. } => Err(TokenRejection::AlreadyUsed),
            TokenState::Revoked { .. } => Err(TokenRejection::Revoked),
            TokenState::Live if self.expires_at <= now => Err(TokenRejection::Expired),
            TokenState::Live => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = RegistrationToken::generate();
        let b = RegistrationToken::generate();
        assert_ne!(a, b);
        assert!(looks_like_token(a.expose()));
        assert_eq!(a.expose().len(), TOKEN_CHARS);
        assert_eq!(a.hash(), hash_token(a.expose()));
        assert_ne!(a.hash(), b.hash());
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn junk_does_not_look_like_a_token() {
        assert!(!looks_like_token(""));
        assert!(!looks_like_token(&"a".repeat(42)));
        assert!(!looks_like_token(&format!("{}=", "a".repeat(42))));
    }

    #[test]
    fn the_token_is_read_back_from_its_link_and_nothing_else() {
        let t = RegistrationToken::generate();
        for portal in [
            "https://p.example/register",
            "https://p.example/r?c=9",
            "https://p.example/r?c=9#top",
            "https://p.example/r?",
        ] {
            let link = registration_link(portal, &t);
            assert_eq!(token_from_link(&link), Some(t.expose()), "{link}");
            let text = format!("Hello,\r\n\r\n{link}\r\nThe board\r\n");
            assert_eq!(token_from_link(&text), Some(t.expose()), "{text}");
        }
        let preview = registration_link("https://p.example/r", &RegistrationToken::placeholder());
        assert_eq!(
            token_from_link(&preview),
            None,
            "a preview carries no token"
        );
        let tok = t.expose();
        // Not a query parameter, cut short, or too long: not a token's link.
        assert_eq!(token_from_link(&format!("token={tok}")), None);
        assert_eq!(
            token_from_link(&format!("https://p.example/r?mytoken={tok}")),
            None
        );
        assert_eq!(
            token_from_link(&format!("https://p.example/r?token={}", &tok[..42])),
            None
        );
        assert_eq!(
            token_from_link(&format!("https://p.example/r?token={tok}x")),
            None
        );
        // A later parameter that is a token is found past one that is not.
        assert_eq!(
            token_from_link(&format!("https://p.example/r?token=old&token={tok}")),
            Some(tok)
        );
        assert_eq!(token_from_link("no link at all"), None);
    }

    #[test]
    fn links_add_the_token_as_a_query_parameter() {
        let t = RegistrationToken::generate();
        let tok = t.expose();
        assert_eq!(
            registration_link("https://p.example/register", &t),
            format!("https://p.example/register?token={tok}")
        );
        assert_eq!(
            registration_link("https://p.example/r?c=9", &t),
            format!("https://p.example/r?c=9&token={tok}")
        );
        assert_eq!(
            registration_link("https://p.example/r?c=9#top", &t),
            format!("https://p.example/r?c=9&token={tok}#top")
        );
    }
}
