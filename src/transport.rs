//! The delivery port: finished message bytes and an envelope in, accepted or a
//! classified error out. A transport never sees templates or owners.

use std::fmt;

use async_trait::async_trait;

use crate::domain::{BatchId, EmailAddress, OwnerId};

/// The SMTP envelope: who the message is from and the one recipient. Always explicit,
/// never derived from the message's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// MAIL FROM.
    pub from: EmailAddress,
    /// RCPT TO: exactly one owner.
    pub to: EmailAddress,
    /// Which batch and owner the message belongs to, when the send engine sends it.
    /// Transports that store messages (the file outbox) name them by it; SMTP ignores
    /// it.
    pub tag: Option<DeliveryTag>,
}

impl Envelope {
    /// An envelope without a tag.
    pub fn new(from: EmailAddress, to: EmailAddress) -> Self {
        Self {
            from,
            to,
            tag: None,
        }
    }

    /// Sets the tag.
    pub fn with_tag(mut self, tag: DeliveryTag) -> Self {
        self.tag = Some(tag);
        self
    }
}

/// Where a message comes from in the workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTag {
    /// The batch.
    pub batch: BatchId,
    /// The owner; `None` for the batch's Summary recap.
    pub owner: Option<OwnerId>,
    /// The message's Message-ID (without angle brackets), the same on every resend.
    pub message_id: String,
}

/// The server took the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// What the server said (a queue id, the reply text), if anything.
    pub response: Option<String>,
}

/// How a delivery error is to be handled: retried, failed for this owner, or stopping
/// the batch. The transport classifies each error; whether a run of connection
/// failures means the server is unreachable is the send engine's judgement, not the
/// transport's, and one failed owner never stops a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// May work if tried again later: a 4xx reply, a dropped connection, a time-out.
    /// The send engine retries with backoff up to a limit, then fails the delivery.
    Transient,
    /// Will not work for this recipient: a 5xx reply. The delivery fails, no retry.
    Permanent,
    /// Nothing can be sent: authentication refused, TLS or certificate failure, bad
    /// settings. The send engine stops the batch and leaves the rest pending.
    Fatal,
}

/// A delivery error, classified by the transport: what the send engine needs to
/// decide between retrying, failing one delivery and stopping the batch, and what a
/// report shows about it.
///
/// Built with the constructors ([`transient`](Self::transient),
/// [`connection`](Self::connection), [`permanent`](Self::permanent),
/// [`fatal`](Self::fatal), [`from_reply`](Self::from_reply)) and refined with
/// [`with_code`](Self::with_code) and [`with_source`](Self::with_source); read
/// through its accessors. Its fields are private and it is `#[non_exhaustive]`, so a
/// field added later breaks no host adapter.
#[derive(Debug, thiserror::Error)]
#[error("{class:?} delivery error: {message}")]
#[non_exhaustive]
pub struct TransportError {
    pub(crate) class: ErrorClass,
    pub(crate) connection: bool,
    pub(crate) code: Option<u16>,
    pub(crate) enhanced: Option<String>,
    pub(crate) message: String,
    #[source]
    pub(crate) source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            connection: false,
            code: None,
            enhanced: None,
            message: message.into(),
            source: None,
        }
    }

    /// A transient error (4xx-like): the engine retries the delivery with backoff.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }

    /// A transient connection error (refused, dropped, timed out): retried like any
    /// transient error, and counted towards stopping a batch whose server is
    /// unreachable ([`is_connection`](Self::is_connection)).
    pub fn connection(message: impl Into<String>) -> Self {
        Self {
            connection: true,
            ..Self::new(ErrorClass::Transient, message)
        }
    }

    /// A permanent error (5xx-like): this delivery fails, without a retry.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, message)
    }

    /// A fatal error (authentication, TLS, settings): the batch stops, the rest stays
    /// pending.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Fatal, message)
    }

    /// Classifies an SMTP reply: 4xx transient, 5xx permanent. The code and the
    /// enhanced status code (`4.2.1`) are kept for reports.
    pub fn from_reply(code: u16, enhanced: Option<String>, text: impl Into<String>) -> Self {
        let class = if (400..500).contains(&code) {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
        Self {
            code: Some(code),
            enhanced,
            ..Self::new(class, text)
        }
    }

    /// Records the server's reply code (and enhanced status code) without changing
    /// the class: for example a fatal error for an authentication the server refused
    /// with 535.
    pub fn with_code(mut self, code: u16, enhanced: Option<String>) -> Self {
        self.code = Some(code);
        self.enhanced = enhanced;
        self
    }

    /// Attaches the cause (the I/O or TLS error behind it), which
    /// [`Error::source`](std::error::Error::source) returns.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// How the send engine handles it.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// Whether the engine may retry.
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// Whether this recipient will never work.
    pub fn is_permanent(&self) -> bool {
        self.class == ErrorClass::Permanent
    }

    /// Whether nothing can be sent.
    pub fn is_fatal(&self) -> bool {
        self.class == ErrorClass::Fatal
    }

    /// Whether it was the connection (refused, dropped, timed out, a 421 "closing")
    /// rather than a reply about this message. A run of deliveries that all exhausted
    /// their retries on connection errors stops the batch: the server is unreachable,
    /// not the recipients bad.
    pub fn is_connection(&self) -> bool {
        self.connection
    }

    /// The SMTP reply code, when the server replied (`None` for a dropped connection
    /// or a transport that is not SMTP).
    pub fn code(&self) -> Option<u16> {
        self.code
    }

    /// The enhanced status code (`4.2.1`, RFC 3463), when the reply had one.
    pub fn enhanced(&self) -> Option<&str> {
        self.enhanced.as_deref()
    }

    /// What happened, for people: the reply text or the failure, without the code
    /// (see [`summary`](Self::summary) for both). Never holds a password.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A one-line summary with the reply code, for reports.
    pub fn summary(&self) -> String {
        match (self.code, &self.enhanced) {
            (Some(code), Some(enh)) => format!("{code} {enh} {}", self.message),
            (Some(code), None) => format!("{code} {}", self.message),
            _ => self.message.clone(),
        }
    }
}

/// Delivers finished messages.
///
/// Object safe: hold it as `Arc<dyn MailTransport>`. The send engine calls `send`
/// from several tasks at once (its concurrency), so implementations must allow
/// concurrent calls.
#[async_trait]
pub trait MailTransport: Send + Sync + fmt::Display {
    /// Delivers one message to the envelope's one recipient.
    ///
    /// # Contract
    /// - `message` is a complete RFC 5322 message; it is sent byte for byte (dot
    ///   stuffing and line-ending rules of the wire protocol are the transport's).
    /// - `Ok` only when the receiving server (or store) took responsibility for it.
    /// - Every failure is classified ([`ErrorClass`]); when the outcome is unknown
    ///   (the connection dropped after the data was sent) the error is transient: the
    ///   engine sends again with the same Message-ID.
    async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Accepted, TransportError>;

    /// Closes connections politely (QUIT). Sending after `close` may reopen them.
    async fn close(&self) -> Result<(), TransportError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_classified_and_keep_their_codes() {
        let busy = TransportError::from_reply(451, Some("4.2.1".into()), "Mailbox busy");
        assert_eq!(busy.class(), ErrorClass::Transient);
        assert_eq!((busy.code(), busy.enhanced()), (Some(451), Some("4.2.1")));
        assert!(!busy.is_connection());
        assert_eq!(busy.summary(), "451 4.2.1 Mailbox busy");

        let unknown = TransportError::from_reply(550, None, "No such user");
        assert!(unknown.is_permanent());
        assert_eq!(unknown.summary(), "550 No such user");

        let refused = TransportError::fatal("authentication refused").with_code(535, None);
        assert!(refused.is_fatal(), "with_code keeps the class");
        assert_eq!(refused.code(), Some(535));
        assert_eq!(refused.message(), "authentication refused");

        let dropped = TransportError::connection("connection reset");
        assert!(dropped.is_transient() && dropped.is_connection());
        assert_eq!(
            (dropped.code(), dropped.summary()),
            (None, "connection reset".into())
        );
    }

    #[test]
    fn the_cause_is_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = TransportError::connection("lost").with_source(io);
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "reset by peer");
    }
}
