//! One SMTP connection of an [`SmtpTransport`]: opened (TCP with TCP_NODELAY, the
//! greeting, EHLO, STARTTLS or implicit TLS, AUTH) within the connect time-out, then
//! used for transactions, reset after a failed one, and closed with QUIT.

use std::net::SocketAddr;

use mail_send::SmtpClient;
use smtp_proto::{EXT_START_TLS, EhloResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::transaction::{self, Failure};
use super::{Security, SmtpTransport, error};
use crate::transport::TransportError;

/// An open connection, greeted, secured and authenticated as the settings ask.
pub(super) struct Connection {
    stream: Stream,
    /// Messages accepted on this connection.
    pub(super) sent: usize,
}

/// The client over plain TCP or TLS, with the capabilities its last EHLO announced.
enum Stream {
    Plain(SmtpClient<TcpStream>, EhloResponse<String>),
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>, EhloResponse<String>),
}

impl Connection {
    /// One message's transaction (see [`transaction::transact`]).
    pub(super) async fn transact(
        &mut self,
        from: &str,
        to: &str,
        message: &[u8],
    ) -> Result<Response<String>, Failure> {
        match &mut self.stream {
            Stream::Plain(c, caps) => transaction::transact(c, caps, from, to, message).await,
            Stream::Tls(c, caps) => transaction::transact(c, caps, from, to, message).await,
        }
    }

    /// RSET; whether the connection can be used again.
    pub(super) async fn reset(&mut self) -> bool {
        match &mut self.stream {
            Stream::Plain(c, _) => c.rset().await.is_ok(),
            Stream::Tls(c, _) => c.rset().await.is_ok(),
        }
    }

    /// QUIT, ignoring the outcome: the connection is dropped either way.
    pub(super) async fn quit(self) {
        let _ = match self.stream {
            Stream::Plain(c, _) => c.quit().await,
            Stream::Tls(c, _) => c.quit().await,
        };
    }
}

impl SmtpTransport {
    /// Opens, greets, secures and authenticates one connection, within the connect
    /// time-out.
    pub(super) async fn open(&self) -> Result<Connection, TransportError> {
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
                    .map_err(|e| error::in_setup(self, "STARTTLS", e))?;
                let caps = self.ehlo(&mut client, &helo).await?;
                self.authenticate(&mut client, &caps).await?;
                Stream::Tls(Box::new(client), caps)
            }
            (Security::Tls, Some(connector)) => {
                let mut client = client
                    .into_tls(connector, &s.host)
                    .await
                    .map_err(|e| error::in_setup(self, "the TLS handshake", e))?;
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
            .map_err(|e| error::in_setup(self, "the greeting", e))?;
        if (200..300).contains(&reply.code) {
            Ok(())
        } else {
            Err(error::in_setup(
                self,
                "the greeting",
                mail_send::Error::UnexpectedReply(reply),
            ))
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
            .map_err(|e| error::in_setup(self, "EHLO", e))
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
                .map_err(|e| error::in_setup(self, "AUTH", e))?;
        }
        Ok(())
    }
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
}
