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

mod settings;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use mail_send::SmtpClient;
use smtp_proto::{EXT_8BIT_MIME, EXT_PIPELINING, EXT_START_TLS, EhloResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub use settings::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONNECTIONS,
    DEFAULT_MESSAGES_PER_CONNECTION, MAX_CONNECTIONS, MAX_TIMEOUT, Security, SmtpConfigError,
    SmtpSettings,
};

use crate::transport::{Accepted, Envelope, MailTransport, TransportError};

/// Delivers messages through an SMTP server over a fixed set of shared, long-lived
/// connections. See the [module docs](self) for the connection rules and the error
/// table.
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

    /// Opens, greets, secures and authenticates one connection, within the connect
    /// time-out.
    async fn open(&self) -> Result<Connection, TransportError> {
        let limit = self.settings.connect_timeout;
        match tokio::time::timeout(limit, self.open_within()).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::connection(format!(
                "{self}: no connection within {limit:?}"
            ))),
        }
    }

    async fn open_within(&self) -> Result<Connection, TransportError> {
        let s = &self.settings;
        let tcp = tcp_connect(&s.host, s.port).await.map_err(|e| {
            TransportError::connection(format!("{self}: cannot connect: {e}")).with_source(e)
        })?;
        let helo =
            match &s.helo_name {
                Some(name) => name.clone(),
                None => address_literal(tcp.local_addr().map_err(|e| {
                    TransportError::connection(format!("{self}: {e}")).with_source(e)
                })?),
            };
        let mut client = SmtpClient {
            stream: tcp,
            timeout: s.command_timeout,
        };
        let stream = match (s.security, &self.tls) {
            (Security::Plain, _) => {
                self.greet(&mut client).await?;
                let caps = self.ehlo(&mut client, &helo).await?;
                self.authenticate(&mut client, &caps).await?;
                Stream::Plain(client, caps)
            }
            (Security::StartTls, Some(connector)) => {
                self.greet(&mut client).await?;
                let caps = self.ehlo(&mut client, &helo).await?;
                if !caps.has_capability(EXT_START_TLS) {
                    return Err(TransportError::fatal(format!(
                        "{self}: STARTTLS is required but the server does not offer it"
                    )));
                }
                let mut client = client
                    .start_tls(connector, &s.host)
                    .await
                    .map_err(|e| self.setup_error("STARTTLS", e))?;
                let caps = self.ehlo(&mut client, &helo).await?;
                self.authenticate(&mut client, &caps).await?;
                Stream::Tls(Box::new(client), caps)
            }
            (Security::Tls, Some(connector)) => {
                let mut client = client
                    .into_tls(connector, &s.host)
                    .await
                    .map_err(|e| self.setup_error("the TLS handshake", e))?;
                self.greet(&mut client).await?;
                let caps = self.ehlo(&mut client, &helo).await?;
                self.authenticate(&mut client, &caps).await?;
                Stream::Tls(Box::new(client), caps)
            }
            (_, None) => {
                return Err(TransportError::fatal(format!(
                    "{self}: TLS is not configured"
                )));
            }
        };
        Ok(Connection { stream, sent: 0 })
    }

    async fn greet<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut SmtpClient<T>,
    ) -> Result<(), TransportError> {
        let reply = client
            .read()
            .await
            .map_err(|e| self.setup_error("the greeting", e))?;
        if (200..300).contains(&reply.code) {
            Ok(())
        } else {
            Err(self.setup_error("the greeting", mail_send::Error::UnexpectedReply(reply)))
        }
    }

    async fn ehlo<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut SmtpClient<T>,
        helo: &str,
    ) -> Result<EhloResponse<String>, TransportError> {
        client
            .ehlo(helo)
            .await
            .map_err(|e| self.setup_error("EHLO", e))
    }

    async fn authenticate<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut SmtpClient<T>,
        caps: &EhloResponse<String>,
    ) -> Result<(), TransportError> {
        if let Some(credentials) = &self.credentials {
            client
                .authenticate(credentials, caps)
                .await
                .map_err(|e| self.setup_error("AUTH", e))?;
        }
        Ok(())
    }

    /// Classifies a failure while opening a connection.
    fn setup_error(&self, during: &str, error: mail_send::Error) -> TransportError {
        use mail_send::Error as E;
        match error {
            E::Io(e) => {
                TransportError::connection(format!("{self}: during {during}: {e}")).with_source(e)
            }
            E::UnparseableReply => TransportError::connection(format!(
                "{self}: the connection closed or the reply was unreadable during {during}"
            )),
            E::Timeout => {
                TransportError::connection(format!("{self}: no reply in time during {during}"))
            }
            E::Tls(e) => TransportError::fatal(format!("{self}: TLS failure during {during}: {e}"))
                .with_source(*e),
            E::UnexpectedReply(reply) | E::AuthenticationFailed(reply) => {
                let what = if during == "AUTH" {
                    "authentication refused"
                } else {
                    "refused"
                };
                let mut error = reply_error(&reply, &format!("{what} ({during})"));
                if error.is_transient() {
                    error.connection = true;
                } else {
                    error.class = crate::transport::ErrorClass::Fatal;
                }
                error
            }
            E::UnsupportedAuthMechanism => TransportError::fatal(format!(
                "{self}: the server offers no AUTH mechanism this client supports (PLAIN, LOGIN)"
            )),
            E::MissingStartTls => TransportError::fatal(format!(
                "{self}: STARTTLS is required but the server does not offer it"
            )),
            E::InvalidTLSName => {
                TransportError::fatal(format!("{self}: the host is no valid TLS server name"))
            }
            other => TransportError::fatal(format!("{self}: during {during}: {other}")),
        }
    }

    /// Runs one transaction on `connection`, replacing a connection found dead
    /// before anything of the message was sent once.
    async fn deliver(
        &self,
        checkout: &mut Checkout<'_>,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Response<String>, TransportError> {
        let from = envelope.from.smtp_form();
        let to = envelope.to.smtp_form();
        let mut reused = checkout.conn.is_some();
        loop {
            let mut conn = match checkout.conn.take() {
                Some(conn) => conn,
                None => self.open().await?,
            };
            let result = match &mut conn.stream {
                Stream::Plain(c, caps) => transact(c, caps, from, to, message).await,
                Stream::Tls(c, caps) => transact(c, caps, from, to, message).await,
            };
            match result {
                Ok(reply) => {
                    conn.sent += 1;
                    if conn.sent >= self.settings.messages_per_connection {
                        conn.quit().await;
                    } else {
                        checkout.conn = Some(conn);
                    }
                    return Ok(reply);
                }
                Err(failure) => {
                    let dead = failure.kills_connection();
                    if dead && reused && failure.stage == Stage::Mail && !failure.is_timeout() {
                        // The pooled connection had gone away while idle.
                        reused = false;
                        continue;
                    }
                    let error = self.transaction_error(failure, to);
                    if !dead && conn.reset().await {
                        checkout.conn = Some(conn);
                    }
                    return Err(error);
                }
            }
        }
    }

    fn transaction_error(&self, failure: Failure, to: &str) -> TransportError {
        use mail_send::Error as E;
        let stage = failure.stage.name();
        match failure.error {
            E::UnexpectedReply(reply) => {
                let mut error = reply_error(&reply, &format!("reply to {stage} for <{to}>"));
                if reply.code == 421 {
                    error.connection = true;
                } else if failure.stage == Stage::Mail && !error.is_transient() {
                    error.class = crate::transport::ErrorClass::Fatal;
                }
                error
            }
            E::Io(e) => TransportError::connection(format!(
                "{self}: connection lost during {stage} for <{to}>: {e}"
            ))
            .with_source(e),
            E::UnparseableReply => TransportError::connection(format!(
                "{self}: the connection closed (or the reply was unreadable) during {stage} for <{to}>"
            )),
            E::Timeout => TransportError::connection(format!(
                "{self}: no reply within {:?} to {stage} for <{to}>",
                self.settings.command_timeout
            )),
            E::Tls(e) => TransportError::connection(format!(
                "{self}: TLS failure during {stage} for <{to}>: {e}"
            ))
            .with_source(*e),
            other => TransportError::fatal(format!("{self}: during {stage} for <{to}>: {other}")),
        }
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
            response: Some(reply_text(&reply)),
        })
    }

    /// Waits for the messages in flight, then sends QUIT on every open connection
    /// and closes it. Failures of QUIT are ignored: the connection closes either
    /// way. Sending afterwards opens fresh connections.
    async fn close(&self) -> Result<(), TransportError> {
        let all = u32::try_from(self.settings.connections).unwrap_or(u32::MAX);
        let _permits = self
            .pool
            .permits
            .acquire_many(all)
            .await
            .map_err(|_| TransportError::fatal("the SMTP connection pool is closed"))?;
        let open: Vec<Connection> = self
            .pool
            .idle()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        futures::future::join_all(open.into_iter().map(Connection::quit)).await;
        Ok(())
    }
}

/// The fixed set of connection slots. A slot is `None` until a message needs it
/// and after its connection was closed.
struct Pool {
    permits: Semaphore,
    idle: Mutex<Vec<Option<Connection>>>,
}

impl Pool {
    fn new(size: usize) -> Self {
        Self {
            permits: Semaphore::new(size),
            idle: Mutex::new((0..size).map(|_| None).collect()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Option<Connection>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a free slot, preferring one with an open connection.
    async fn checkout(&self) -> Result<Checkout<'_>, TransportError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| TransportError::fatal("the SMTP connection pool is closed"))?;
        let conn = self.idle().pop().flatten();
        Ok(Checkout {
            pool: self,
            conn,
            _permit: permit,
        })
    }
}

/// A slot taken from the pool; goes back when dropped, also when the send is
/// cancelled (a connection in the middle of a transaction is dropped, not
/// returned: it is moved out of the checkout while in use).
struct Checkout<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let conn = self.conn.take();
        let mut idle = self.pool.idle();
        if conn.is_some() {
            idle.push(conn);
        } else {
            idle.insert(0, None);
        }
    }
}

enum Stream {
    Plain(SmtpClient<TcpStream>, EhloResponse<String>),
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>, EhloResponse<String>),
}

struct Connection {
    stream: Stream,
    /// Messages accepted on this connection.
    sent: usize,
}

impl Connection {
    /// RSET; whether the connection can be used again.
    async fn reset(&mut self) -> bool {
        match &mut self.stream {
            Stream::Plain(c, _) => c.rset().await.is_ok(),
            Stream::Tls(c, _) => c.rset().await.is_ok(),
        }
    }

    /// QUIT, ignoring the outcome: the connection is dropped either way.
    async fn quit(self) {
        let _ = match self.stream {
            Stream::Plain(c, _) => c.quit().await,
            Stream::Tls(c, _) => c.quit().await,
        };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Mail,
    Rcpt,
    Data,
    EndOfData,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "the end of DATA",
        }
    }
}

struct Failure {
    stage: Stage,
    error: mail_send::Error,
    /// The server's state is not what ours is: do not reuse the connection.
    desync: bool,
}

impl Failure {
    /// Whether the connection cannot be used again: it dropped, timed out, or the
    /// server said 421 (closing).
    fn kills_connection(&self) -> bool {
        if self.desync {
            return true;
        }
        match &self.error {
            mail_send::Error::UnexpectedReply(reply) => reply.code == 421,
            _ => true,
        }
    }

    fn is_timeout(&self) -> bool {
        matches!(self.error, mail_send::Error::Timeout)
    }
}

/// One transaction: MAIL FROM, RCPT TO and DATA (in one write when the server
/// offers PIPELINING, RFC 2920, else each waiting for its reply), then the message
/// and the reply to its final dot.
async fn transact<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    caps: &EhloResponse<String>,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<Response<String>, Failure> {
    let fail = |stage| {
        move |error| Failure {
            stage,
            error,
            desync: false,
        }
    };
    let body = if caps.has_capability(EXT_8BIT_MIME) && !message.is_ascii() {
        " BODY=8BITMIME"
    } else {
        ""
    };
    let mail = format!("MAIL FROM:<{from}>{body}\r\n");
    let rcpt = format!("RCPT TO:<{to}>\r\n");
    if caps.has_capability(EXT_PIPELINING) {
        // One write, one segment.
        let commands = [mail.as_bytes(), rcpt.as_bytes(), b"DATA\r\n"].concat();
        let limit = client.timeout;
        let mut replies = tokio::time::timeout(limit, async {
            client.stream.write_all(&commands).await?;
            client.stream.flush().await?;
            client.read_many(3).await
        })
        .await
        .map_err(|_| fail(Stage::Mail)(mail_send::Error::Timeout))?
        .map_err(fail(Stage::Mail))?
        .into_iter();
        let (Some(mail), Some(rcpt), Some(data)) = (replies.next(), replies.next(), replies.next())
        else {
            return Err(fail(Stage::Mail)(mail_send::Error::UnparseableReply));
        };
        let data_open = data.code == 354;
        for (reply, class, stage) in [(mail, 2, Stage::Mail), (rcpt, 2, Stage::Rcpt)] {
            if let Err(mut failure) = expect(reply, class, stage) {
                // A server that opened DATA after refusing the transaction is out
                // of step with us: the connection is not used again.
                failure.desync = data_open;
                return Err(failure);
            }
        }
        expect(data, 3, Stage::Data)?;
    } else {
        let reply = client.cmd(mail).await.map_err(fail(Stage::Mail))?;
        expect(reply, 2, Stage::Mail)?;
        let reply = client.cmd(rcpt).await.map_err(fail(Stage::Rcpt))?;
        expect(reply, 2, Stage::Rcpt)?;
        let reply = client.cmd(b"DATA\r\n").await.map_err(fail(Stage::Data))?;
        expect(reply, 3, Stage::Data)?;
    }
    let limit = client.timeout;
    let reply = tokio::time::timeout(limit, async {
        let end: &[u8] = if message.ends_with(b"\r\n") {
            b".\r\n"
        } else {
            b"\r\n.\r\n"
        };
        if needs_framing(message) {
            client.stream.write_all(&data_block(message)).await?;
        } else if message.len() <= SMALL_MESSAGE {
            // One segment for the message and its end: copying a few KB is cheaper
            // than a second write.
            client.stream.write_all(&[message, end].concat()).await?;
        } else {
            client.stream.write_all(message).await?;
            client.stream.write_all(end).await?;
        }
        client.stream.flush().await?;
        client.read().await
    })
    .await
    .map_err(|_| fail(Stage::EndOfData)(mail_send::Error::Timeout))?
    .map_err(fail(Stage::EndOfData))?;
    expect(reply, 2, Stage::EndOfData)
}

/// Messages up to this size go out in one write with their final dot.
const SMALL_MESSAGE: usize = 64 * 1024;

/// Whether the message must be rewritten for DATA: a bare CR or LF, or a line
/// starting with `.`. Messages from the MIME builder never need it, and are sent
/// as they are, uncopied.
fn needs_framing(message: &[u8]) -> bool {
    if message.first() == Some(&b'.') {
        return true;
    }
    let mut lfs = 0usize;
    for at in memchr::memchr_iter(b'\n', message) {
        if at == 0 || message[at - 1] != b'\r' || message.get(at + 1) == Some(&b'.') {
            return true;
        }
        lfs += 1;
    }
    memchr::memchr_iter(b'\r', message).count() != lfs
}

/// The message as DATA puts it on the wire, with the terminating `.` line: every
/// line break as CRLF (a bare CR or LF becomes CRLF, so no `<LF>.<LF>` can end the
/// data early anywhere), every line starting with `.` stuffed with one more, and a
/// final CRLF only when the message does not already end with one, so the server
/// stores exactly the bytes given. One buffer, so the data leaves in as few
/// segments as the socket allows.
fn data_block(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 512 + 8);
    let mut line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += if b == b'\r' && message.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                line_start = true;
                continue;
            }
            b'.' if line_start => out.extend_from_slice(b".."),
            _ => out.push(b),
        }
        line_start = false;
        i += 1;
    }
    if !line_start || out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn expect(reply: Response<String>, class: u16, stage: Stage) -> Result<Response<String>, Failure> {
    if reply.code / 100 == class {
        Ok(reply)
    } else {
        Err(Failure {
            stage,
            error: mail_send::Error::UnexpectedReply(reply),
            desync: false,
        })
    }
}

fn enhanced(reply: &Response<String>) -> Option<String> {
    let [a, b, c] = reply.esc;
    (a != 0).then(|| format!("{a}.{b}.{c}"))
}

fn reply_text(reply: &Response<String>) -> String {
    match enhanced(reply) {
        Some(esc) => format!("{} {esc} {}", reply.code, reply.message),
        None => format!("{} {}", reply.code, reply.message),
    }
}

/// A reply as an error: 4xx transient, 5xx permanent (callers adjust).
fn reply_error(reply: &Response<String>, context: &str) -> TransportError {
    let code = if (400..600).contains(&reply.code) {
        reply.code
    } else {
        // An answer outside 4xx/5xx where a positive one was due: a protocol
        // error; the server is not to be trusted with this message.
        554
    };
    TransportError::from_reply(
        code,
        enhanced(reply),
        format!(
            "{} ({context}; the server said {})",
            reply.message, reply.code
        ),
    )
}

/// Connects with TCP_NODELAY set: SMTP is a dialogue of small writes, and without
/// it a message's last segment can wait for the server's delayed ACK (about 40 ms a
/// message).
async fn tcp_connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// `[192.0.2.10]` or `[IPv6:2001:db8::1]`: the EHLO name when none is set.
fn address_literal(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("[{}]", a.ip()),
        SocketAddr::V6(a) => format!("[IPv6:{}]", a.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_socket_has_tcp_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = tcp_connect("127.0.0.1", port).await.unwrap();
        assert!(tcp.nodelay().unwrap());
    }

    #[test]
    fn data_block_stuffs_dots_and_ends_exactly_once() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"A: b\r\n\r\nbody\r\n", b"A: b\r\n\r\nbody\r\n.\r\n"),
            (b"A: b\r\n\r\nbody", b"A: b\r\n\r\nbody\r\n.\r\n"),
            (b".starts\r\n", b"..starts\r\n.\r\n"),
            (b"x\r\n.\r\n..\r\n", b"x\r\n..\r\n...\r\n.\r\n"),
            // Bare LF and CR become CRLF: no smuggled end of data.
            (
                b"x\n.\nMAIL FROM:<a@b>\n",
                b"x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n",
            ),
            (b"x\r.\rMAIL", b"x\r\n..\r\nMAIL\r\n.\r\n"),
            (b"", b"\r\n.\r\n"),
            (b"a.b\r\n", b"a.b\r\n.\r\n"),
            (b"a\r\nb\rc\r\n", b"a\r\nb\r\nc\r\n.\r\n"),
            (b"a\r\n\nb\r\n", b"a\r\n\r\nb\r\n.\r\n"),
        ];
        assert!(!needs_framing(b"A: b\r\n\r\nbody.\r\n"));
        assert!(needs_framing(b"A: b\r\n\r\n.body\r\n"));
        assert!(needs_framing(b"A: b\r\n\nbody\r\n"));
        assert!(needs_framing(b"A: b\r\r\nbody\r\n"));
        for (message, wire) in cases {
            if !needs_framing(message) {
                let mut direct = message.to_vec();
                if !direct.ends_with(b"\r\n") {
                    direct.extend_from_slice(b"\r\n");
                }
                direct.extend_from_slice(b".\r\n");
                assert_eq!(direct, wire.to_vec(), "sent as is");
            }
            assert_eq!(
                String::from_utf8_lossy(&data_block(message)),
                String::from_utf8_lossy(wire)
            );
        }
    }
}
