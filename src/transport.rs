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

/// How a delivery error is to be handled (DESIGN.md rule 6).
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

/// A delivery error, classified by the transport.
#[derive(Debug, thiserror::Error)]
#[error("{class:?} delivery error: {message}")]
pub struct TransportError {
    /// How to handle it.
    pub class: ErrorClass,
    /// Whether it was the connection (refused, dropped, timed out) rather than a
    /// reply from the server. A run of deliveries that all exhausted their retries on
    /// connection errors stops the batch.
    pub connection: bool,
    /// The SMTP reply code, when there was one.
    pub code: Option<u16>,
    /// The enhanced status code (`4.2.1`), when there was one.
    pub enhanced: Option<String>,
    /// What happened, for people.
    pub message: String,
    /// The cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
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

    /// A transient error (4xx-like).
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }

    /// A transient connection error (refused, dropped, timed out).
    pub fn connection(message: impl Into<String>) -> Self {
        Self {
            connection: true,
            ..Self::new(ErrorClass::Transient, message)
        }
    }

    /// A permanent error (5xx-like).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, message)
    }

    /// A fatal error (authentication, TLS, settings).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Fatal, message)
    }

    /// Classifies an SMTP reply: 4xx transient, 5xx permanent.
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

    /// Attaches the cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
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
