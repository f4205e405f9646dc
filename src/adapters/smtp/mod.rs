//! [`SmtpTransport`]: delivery through an SMTP server (feature `smtp`).
//!
//! A fixed set of long-lived connections, shared by the send engine's workers and
//! reused across messages; TCP_NODELAY on every socket; RSET after a failed
//! transaction; a fresh connection after a dropped one and after
//! [`with_messages_per_connection`](SmtpSettings::with_messages_per_connection)
//! messages; QUIT on [`close`](MailTransport::close). The envelope is explicit: MAIL
//! FROM the envelope's sender, RCPT TO its one recipient (both in their
//! [`smtp_form`](crate::domain::EmailAddress::smtp_form)), never taken from the
//! message's headers.
//!
//! TLS is rustls with an explicit *ring* provider: the adapter never installs a
//! process-wide crypto provider, so it works whatever else the host links.
//!
//! ```no_run
//! use std::sync::Arc;
//! use owner_access::adapters::smtp::{SmtpSettings, SmtpTransport};
//! use owner_access::{InMemoryRepository, OwnerAccess};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = SmtpSettings::from_url("smtp://mail.example.com:587?starttls=required")?
//!     .with_credentials("portal", "app-password")
//!     .with_helo_name("portal.example.com");
//! let transport = Arc::new(SmtpTransport::new(settings)?);
//! let service = OwnerAccess::builder(Arc::new(InMemoryRepository::new()), transport)
//!     .sender("Owner Portal <no-reply@example.com>")
//!     .portal_url("https://portal.example.com/register")
//!     .build()?;
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Every failure is a [`TransportError`] in one of the three classes of the send
//! engine; SMTP replies keep their code, enhanced status code and text.
//!
//! | What happened | Class | `connection` | Connection afterwards |
//! |---|---|---|---|
//! | 4xx reply to MAIL, RCPT, DATA or the final dot | transient | no | RSET, reused |
//! | 5xx reply to RCPT, DATA or the final dot | permanent | no | RSET, reused |
//! | 5xx reply to MAIL FROM (the server refuses the sender) | fatal | no | RSET, reused |
//! | 421 reply, connection refused, dropped or reset, time-out (also after the final dot: the outcome is unknown, the engine sends again with the same Message-ID) | transient | yes | closed; the next message opens a fresh one |
//! | 4xx to the greeting, EHLO, STARTTLS or AUTH | transient | yes | closed |
//! | 5xx to the greeting, EHLO or STARTTLS; STARTTLS required but not offered | fatal | no | closed |
//! | authentication refused (5xx), no common AUTH mechanism | fatal | no | closed |
//! | TLS handshake or certificate failure | fatal | no | closed |
//! | settings that cannot work ([`SmtpTransport::new`]) | fatal | no | — |
//!
//! A connection found dropped (or answering 421) when a message starts on it, after
//! it sat idle in the pool, is replaced once at once, before the error is reported:
//! nothing of the message had been sent.

// The parts, in the order a message meets them:
// - `pool`: the fixed set of connection slots, and the reuse rules of one send (a
//   pooled connection found dead is replaced once, RSET after a failure, QUIT after
//   `messages_per_connection`);
// - `connection`: opening one (TCP_NODELAY, greeting, EHLO, STARTTLS or TLS, AUTH),
//   RSET and QUIT;
// - `transaction`: one message's MAIL FROM, RCPT TO, DATA and final dot on an open
//   connection, pipelined when the server allows, and which stage failed;
// - `error`: failures of the two above classified into `TransportError`s (the table
//   above);
// - `settings` and `tls`: what to connect to, and the rustls configuration.
mod connection;
mod error;
mod pool;
mod settings;
mod tls;
mod transaction;

use std::fmt;

use async_trait::async_trait;
use tokio_rustls::TlsConnector;

pub use settings::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONNECTIONS,
    DEFAULT_MESSAGES_PER_CONNECTION, MAX_CONNECTIONS, MAX_TIMEOUT, Security, SmtpConfigError,
    SmtpSettings,
};

use crate::transport::{Accepted, Envelope, MailTransport, TransportError};
use pool::Pool;

/// Delivers messages through an SMTP server over a fixed set of shared, long-lived
/// connections. See the [module docs](self) for the connection rules and the error
/// table.
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub struct SmtpTransport {
    settings: SmtpSettings,
    /// `Some` unless the security is plain.
    tls: Option<TlsConnector>,
    credentials: Option<mail_send::Credentials<String>>,
    pool: Pool,
}

impl fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SmtpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SMTP server {}:{} ({})",
            self.settings.host, self.settings.port, self.settings.security
        )
    }
}

impl SmtpTransport {
    /// Checks the settings and prepares the TLS configuration. Connects to nothing:
    /// connections open as messages need them.
    ///
    /// # Errors
    /// A [fatal](crate::transport::ErrorClass::Fatal) [`TransportError`] when the
    /// settings cannot work: an empty host, zero connections or more than
    /// [`MAX_CONNECTIONS`], zero messages per connection, a
    /// time-out of zero or over [`MAX_TIMEOUT`], a HELO name or credentials that cannot be sent, a
    /// host that is no valid TLS server name, a root certificate that does not
    /// parse, or (with TLS and no extra roots) no root certificates on the platform.
    /// The error never contains the password.
    pub fn new(settings: SmtpSettings) -> Result<Self, TransportError> {
        settings.validate().map_err(TransportError::fatal)?;
        let tls = match settings.security {
            Security::Plain => None,
            Security::StartTls | Security::Tls => {
                tls::server_name(&settings.host).map_err(TransportError::fatal)?;
                let roots =
                    tls::parse_roots(&settings.root_certificates).map_err(TransportError::fatal)?;
                Some(
                    tls::connector(roots, settings.accept_invalid_certs)
                        .map_err(TransportError::fatal)?,
                )
            }
        };
        let credentials = settings
            .credentials
            .as_ref()
            .map(|c| mail_send::Credentials::new(c.user.clone(), c.password.0.clone()));
        let pool = Pool::new(settings.connections);
        Ok(Self {
            settings,
            tls,
            credentials,
            pool,
        })
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &SmtpSettings {
        &self.settings
    }
}

#[async_trait]
impl MailTransport for SmtpTransport {
    /// Sends one message in one SMTP transaction on one of the shared connections
    /// (opening it if needed). See the [module docs](self) for how errors are
    /// classified.
    async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Accepted, TransportError> {
        let mut checkout = self.pool.checkout().await?;
        let reply = self.deliver(&mut checkout, envelope, message).await?;
        Ok(Accepted {
            response: Some(transaction::reply_text(&reply)),
        })
    }

    /// Waits for the messages in flight, then sends QUIT on every open connection
    /// and closes it. Failures of QUIT are ignored: the connection closes either
    /// way. Sending afterwards opens fresh connections.
    async fn close(&self) -> Result<(), TransportError> {
        self.pool.close_all().await
    }
}
