//! What an [`SmtpTransport`](super::SmtpTransport) connects to and how: parsed from a
//! URL or built with `with_*` setters, validated once by
//! [`SmtpTransport::new`](super::SmtpTransport::new).

use std::fmt;
use std::time::Duration;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub enum Security {
    /// No TLS at all, even if the server offers STARTTLS (`smtp://host:port`). For a
    /// relay on the same host or a trusted network only: credentials, if set, go in
    /// the clear.
    Plain,
    /// Plain connect, then STARTTLS, which the server must offer
    /// (`smtp://host:port?starttls=required`; usually port 587). A server that does
    /// not offer it is a fatal error, never a silent fall back to plain text.
    StartTls,
    /// TLS from the first byte (`smtps://host:port`; usually port 465).
    Tls,
}

impl Security {
    /// A name for people.
    fn label(self) -> &'static str {
        match self {
            Security::Plain => "plain",
            Security::StartTls => "STARTTLS",
            Security::Tls => "implicit TLS",
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A password that never shows in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// The user name and password for SMTP AUTH (PLAIN or LOGIN, whichever the server
/// offers).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SmtpCredentials {
    pub(crate) user: String,
    pub(crate) password: Secret,
}

impl fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpCredentials")
            .field("user", &self.user)
            .field("password", &self.password)
            .finish()
    }
}

/// Default number of connections: the send engine's default concurrency
/// ([`SendOptions::concurrency`](crate::SendOptions::concurrency)).
pub const DEFAULT_CONNECTIONS: usize = 8;
/// Default number of messages sent over one connection before it is closed (QUIT)
/// and a fresh one opened.
pub const DEFAULT_MESSAGES_PER_CONNECTION: usize = 100;
/// Default time allowed to open a connection: TCP connect, greeting, EHLO, TLS and
/// AUTH together.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed for each command's reply (and for the message data and the
/// reply to its final dot).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The most connections one transport keeps (the send engine's
/// [`MAX_CONCURRENCY`](crate::SendOptions::MAX_CONCURRENCY)).
pub const MAX_CONNECTIONS: usize = 1024;
/// The longest connect or command time-out.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where and how [`SmtpTransport`](super::SmtpTransport) delivers.
///
/// Build it from a URL ([`from_url`](Self::from_url)) or with [`new`](Self::new), then
/// adjust it with the `with_*` setters, which consume and return the settings.
/// Nothing is checked until [`SmtpTransport::new`](super::SmtpTransport::new), which
/// reports settings that cannot work as a fatal error.
///
/// `Debug` output never contains the password.
#[derive(Clone, Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub struct SmtpSettings {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) security: Security,
    pub(crate) credentials: Option<SmtpCredentials>,
    pub(crate) helo_name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) connections: usize,
    pub(crate) messages_per_connection: usize,
    pub(crate) root_certificates: Vec<Vec<u8>>,
    pub(crate) accept_invalid_certs: bool,
}

impl SmtpSettings {
    /// Settings for `host:port` with the given security and every other setting at
    /// its default: no credentials, [`DEFAULT_CONNECTIONS`] connections,
    /// [`DEFAULT_MESSAGES_PER_CONNECTION`] messages each, the connect and command
    /// time-outs [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_COMMAND_TIMEOUT`], the
    /// platform's root certificates, certificates verified, and as HELO name the
    /// address literal of the local end of each connection (`[192.0.2.10]`).
    pub fn new(host: impl Into<String>, port: u16, security: Security) -> Self {
        Self {
            host: host.into(),
            port,
            security,
            credentials: None,
            helo_name: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connections: DEFAULT_CONNECTIONS,
            messages_per_connection: DEFAULT_MESSAGES_PER_CONNECTION,
            root_certificates: Vec::new(),
            accept_invalid_certs: false,
        }
    }

    /// Parses `smtp://host:port` (plain), `smtp://host:port?starttls=required`
    /// (STARTTLS, required) or `smtps://host:port` (implicit TLS). The port defaults
    /// to 25 for `smtp` and 465 for `smtps`; an IPv6 host is written in brackets
    /// (`smtp://[::1]:2525`). The only query parameter is `starttls`, whose values are
    /// `required` and `never` (the default for `smtp`).
    ///
    /// # Errors
    /// [`SmtpConfigError`] when the URL is not one of these forms. Credentials in the
    /// URL are refused (set them with [`with_credentials`](Self::with_credentials)),
    /// and no error repeats the URL, so a password put there by mistake is never
    /// echoed into a log.
    pub fn from_url(url: &str) -> Result<Self, SmtpConfigError> {
        let (scheme, rest) = url.split_once("://").ok_or(SmtpConfigError::NotAUrl)?;
        let (mut security, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "smtp" => (Security::Plain, 25),
            "smtps" => (Security::Tls, 465),
            other => {
                return Err(SmtpConfigError::UnsupportedScheme {
                    scheme: other.chars().take(16).collect(),
                });
            }
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains('@') {
            return Err(SmtpConfigError::CredentialsInUrl);
        }
        if authority.contains('/') {
            return Err(SmtpConfigError::UnexpectedPath);
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(SmtpConfigError::InvalidPort)?,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (name, value, security) {
                ("starttls", "required", Security::Plain | Security::StartTls) => {
                    security = Security::StartTls;
                }
                ("starttls", "never", Security::Plain) => {}
                ("starttls", "required" | "never", Security::Tls) => {
                    return Err(SmtpConfigError::StartTlsWithSmtps);
                }
                ("starttls", _, _) => {
                    return Err(SmtpConfigError::InvalidParameterValue {
                        name: "starttls".into(),
                    });
                }
                _ => {
                    return Err(SmtpConfigError::UnknownParameter {
                        name: name.chars().take(32).collect(),
                    });
                }
            }
        }
        Ok(Self::new(host, port, security))
    }

    /// Authenticates every connection with AUTH PLAIN or LOGIN (whichever the
    /// server offers) after TLS is up. The password never appears in `Debug`
    /// output or in errors.
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some(SmtpCredentials {
            user: user.into(),
            password: Secret(password.into()),
        });
        self
    }

    /// Accepts any server certificate, even expired, self-signed or for another
    /// host. For tests only: it gives up the protection TLS exists for. Off by
    /// default.
    pub fn with_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.accept_invalid_certs = accept;
        self
    }

    /// How many connections to keep open and share among the send engine's workers
    /// (default [`DEFAULT_CONNECTIONS`]). A worker that finds every connection busy
    /// waits for one. From 1 to [`MAX_CONNECTIONS`].
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = connections;
        self
    }

    /// The name sent in EHLO (default: the address literal of the local end of the
    /// connection). Use the sending host's fully qualified domain name.
    pub fn with_helo_name(mut self, name: impl Into<String>) -> Self {
        self.helo_name = Some(name.into());
        self
    }

    /// The time allowed to open a connection (TCP connect, greeting, EHLO, TLS and
    /// AUTH together) and the time allowed for each command's reply, the message
    /// data included. Both must be more than zero and at most [`MAX_TIMEOUT`].
    pub fn with_timeouts(mut self, connect: Duration, command: Duration) -> Self {
        self.connect_timeout = connect;
        self.command_timeout = command;
        self
    }

    /// After this many messages a connection is closed with QUIT and the next
    /// message opens a fresh one (default [`DEFAULT_MESSAGES_PER_CONNECTION`]).
    /// Must be at least 1.
    pub fn with_messages_per_connection(mut self, messages: usize) -> Self {
        self.messages_per_connection = messages;
        self
    }

    /// Trusts this root certificate besides the platform's, for a server whose
    /// certificate comes from a private CA. DER bytes, or PEM text holding one or
    /// more `CERTIFICATE` blocks. May be called more than once.
    pub fn with_root_certificate(mut self, der_or_pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(der_or_pem.into());
        self
    }

    /// The server's host name or IP address (also the name its certificate must
    /// carry).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How the connection is protected.
    pub fn security(&self) -> Security {
        self.security
    }

    /// How many connections are shared by the workers.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// How many messages go over one connection before a fresh one is opened.
    pub fn messages_per_connection(&self) -> usize {
        self.messages_per_connection
    }

    /// Checks what can be checked without the network.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() {
            return Err("the SMTP host is empty".into());
        }
        if self.port == 0 {
            return Err("the SMTP port is 0".into());
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!(
                "the number of SMTP connections must be from 1 to {MAX_CONNECTIONS}, not {}",
                self.connections
            ));
        }
        if self.messages_per_connection == 0 {
            return Err("the number of messages per SMTP connection must be at least 1".into());
        }
        for (what, timeout) in [
            ("connect", self.connect_timeout),
            ("command", self.command_timeout),
        ] {
            if timeout.is_zero() || timeout > MAX_TIMEOUT {
                return Err(format!(
                    "the SMTP {what} time-out must be more than zero and at most {MAX_TIMEOUT:?}, not {timeout:?}"
                ));
            }
        }
        if let Some(name) = &self.helo_name
            && (name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()))
        {
            return Err("the HELO name must be non-empty printable ASCII without spaces".into());
        }
        if let Some(c) = &self.credentials
            && (c.user.contains(['\r', '\n', '\0']) || c.password.0.contains(['\r', '\n', '\0']))
        {
            return Err("the SMTP user name or password contains a line break or NUL".into());
        }
        Ok(())
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<&str>), SmtpConfigError> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(SmtpConfigError::InvalidHost)?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(SmtpConfigError::InvalidHost);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(SmtpConfigError::InvalidHost)?),
        };
        return Ok((host.to_owned(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if !valid {
        return Err(SmtpConfigError::InvalidHost);
    }
    Ok((host.to_owned(), port))
}

/// Why [`SmtpSettings::from_url`] refused a URL. No variant repeats the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub enum SmtpConfigError {
    /// There is no `scheme://`.
    #[error("not an SMTP URL: expected smtp://host:port or smtps://host:port")]
    NotAUrl,
    /// The scheme is neither `smtp` nor `smtps`.
    #[error("unsupported scheme `{scheme}`: expected smtp or smtps")]
    UnsupportedScheme {
        /// The scheme given (at most 16 characters of it).
        scheme: String,
    },
    /// The URL carries `user:password@`; credentials go in
    /// [`SmtpSettings::with_credentials`].
    #[error("credentials are not accepted in the SMTP URL; use with_credentials")]
    CredentialsInUrl,
    /// The host is empty or not a host name or IP address.
    #[error("the SMTP URL has no valid host")]
    InvalidHost,
    /// The port is not a number from 1 to 65535.
    #[error("the SMTP URL's port is not a number from 1 to 65535")]
    InvalidPort,
    /// The URL has a path after the host and port.
    #[error("the SMTP URL must not have a path")]
    UnexpectedPath,
    /// A query parameter other than `starttls`.
    #[error("unknown SMTP URL parameter `{name}`")]
    UnknownParameter {
        /// The parameter's name (at most 32 characters of it).
        name: String,
    },
    /// A parameter with a value it does not take (`starttls` takes `required` or
    /// `never`).
    #[error("invalid value for SMTP URL parameter `{name}`")]
    InvalidParameterValue {
        /// The parameter's name.
        name: String,
    },
    /// `smtps://` with a `starttls` parameter: implicit TLS and STARTTLS exclude
    /// each other.
    #[error("smtps:// is implicit TLS; it takes no starttls parameter")]
    StartTlsWithSmtps,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let s = SmtpSettings::from_url("smtp://mail.example.com:2525").unwrap();
        assert_eq!(
            (s.host(), s.port(), s.security()),
            ("mail.example.com", 2525, Security::Plain)
        );
        let s = SmtpSettings::from_url("smtp://mail.example.com:587?starttls=required").unwrap();
        assert_eq!((s.port(), s.security()), (587, Security::StartTls));
        let s = SmtpSettings::from_url("smtps://mail.example.com").unwrap();
        assert_eq!((s.port(), s.security()), (465, Security::Tls));
        let s = SmtpSettings::from_url("smtp://[::1]:25/").unwrap();
        assert_eq!((s.host(), s.port()), ("::1", 25));
        let s = SmtpSettings::from_url("smtp://127.0.0.1").unwrap();
        assert_eq!(s.port(), 25);
    }

    #[test]
    fn refuses_what_is_not_one_of_the_forms() {
        use SmtpConfigError::*;
        for (url, want) in [
            ("mail.example.com:25", NotAUrl),
            (
                "http://mail.example.com",
                UnsupportedScheme {
                    scheme: "http".into(),
                },
            ),
            ("smtp://:25", InvalidHost),
            ("smtp://mail.example.com:0", InvalidPort),
            ("smtp://mail.example.com:70000", InvalidPort),
            ("smtp://mail.example.com:x", InvalidPort),
            ("smtp://mail.example.com/x", UnexpectedPath),
            (
                "smtp://mail.example.com?tls=yes",
                UnknownParameter { name: "tls".into() },
            ),
            (
                "smtp://mail.example.com?starttls=maybe",
                InvalidParameterValue {
                    name: "starttls".into(),
                },
            ),
            (
                "smtps://mail.example.com?starttls=required",
                StartTlsWithSmtps,
            ),
            ("smtp://[zz]:25", InvalidHost),
        ] {
            assert_eq!(SmtpSettings::from_url(url).unwrap_err(), want, "{url}");
        }
    }

    #[test]
    fn never_shows_the_password() {
        let err = SmtpSettings::from_url("smtp://ann:hunter2@mail.example.com:25").unwrap_err();
        assert_eq!(err, SmtpConfigError::CredentialsInUrl);
        assert!(!err.to_string().contains("hunter2") && !format!("{err:?}").contains("hunter2"));
        let s = SmtpSettings::new("mail.example.com", 587, Security::StartTls)
            .with_credentials("ann", "hunter2");
        let debug = format!("{s:?}");
        assert!(
            debug.contains("ann") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn validation_catches_settings_that_cannot_work() {
        let base = SmtpSettings::new("mail.example.com", 25, Security::Plain);
        assert!(base.validate().is_ok());
        assert!(base.clone().with_connections(0).validate().is_err());
        assert!(
            base.clone()
                .with_connections(MAX_CONNECTIONS + 1)
                .validate()
                .is_err()
        );
        assert!(
            base.clone()
                .with_connections(MAX_CONNECTIONS)
                .validate()
                .is_ok()
        );
        assert!(
            base.clone()
                .with_timeouts(Duration::from_secs(1), Duration::MAX)
                .validate()
                .is_err()
        );
        assert!(
            base.clone()
                .with_messages_per_connection(0)
                .validate()
                .is_err()
        );
        assert!(
            base.clone()
                .with_timeouts(Duration::ZERO, Duration::from_secs(1))
                .validate()
                .is_err()
        );
        assert!(base.clone().with_helo_name("two words").validate().is_err());
        let err = base
            .clone()
            .with_credentials("ann", "pass\r\nword")
            .validate()
            .unwrap_err();
        assert!(!err.contains("pass\r"));
        assert!(
            SmtpSettings::new("", 25, Security::Plain)
                .validate()
                .is_err()
        );
    }
}
