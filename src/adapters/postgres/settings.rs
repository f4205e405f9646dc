//! How to reach the server: [`PostgresSettings`] (the URL, the pool, the time-outs,
//! which clock judges leases) and the TLS set-up the URL's `sslmode` asks for.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::repository::{RepoResult, RepositoryError};

use super::connection::Message;

/// The default number of pooled connections.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The default statement time-out: a statement still running after it is cancelled
/// by the server and the call fails as [`RepositoryError::Unavailable`].
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time to open a connection (and to wait for a free one in the pool)
/// before a call fails as [`RepositoryError::Unavailable`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which clock decides whether a claim's lease has run out (see "Claims are
/// leases" on [`InvitationStore`](crate::InvitationStore)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LeaseClock {
    /// The server's `now()`: one clock for every process of every machine sharing the
    /// database, whatever their own clocks say. The default. A claim's `at` and
    /// `until`, and [`HeldClaims::now`](crate::repository::HeldClaims::now), are the
    /// server's times; the `now` a caller passes to the claim methods is not used.
    #[default]
    Server,
    /// The `now` each caller passes, as the in-memory and SQLite stores do: for
    /// tests with a manual clock (the conformance suites use fixed times), and for
    /// processes that share one clock anyway.
    Caller,
}

/// Connection settings of the PostgreSQL adapters: a URL and, optionally, the pool
/// size, the statement time-out, the connect time-out and the lease clock.
///
/// The URL is libpq's: `postgres://user:password@host:port/database?sslmode=require`
/// (or the `key=value` form). `sslmode` is `disable`, `prefer` (the default: TLS when
/// the server offers it, the certificate not verified, as libpq does) or `require`
/// (TLS or no connection, the certificate verified by the platform's verifier against
/// the host name). TLS runs on rustls with the *ring* provider, and the crate never
/// installs a process-wide provider.
///
/// ```
/// use std::time::Duration;
/// use owner_access::adapters::postgres::PostgresSettings;
///
/// let settings = PostgresSettings::new("postgres://app@db.example.com/hoa?sslmode=require")
///     .pool_size(16)
///     .statement_timeout(Duration::from_secs(10));
/// assert_eq!(settings.url(), "postgres://app@db.example.com/hoa?sslmode=require");
/// ```
#[derive(Clone)]
pub struct PostgresSettings {
    url: String,
    pool_size: usize,
    statement_timeout: Duration,
    connect_timeout: Duration,
    lease_clock: LeaseClock,
}

/// Shows the URL with its password hidden.
impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redacted(&self.url))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("lease_clock", &self.lease_clock)
            .finish()
    }
}

/// `url` with the password replaced by `***`: in a URL's user info
/// (`user:password@`) and in the `key=value` form (`password=…`).
fn redacted(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            );
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl PostgresSettings {
    /// Settings for the server and database at `url`, with the defaults:
    /// [`DEFAULT_POOL_SIZE`] connections, [`DEFAULT_STATEMENT_TIMEOUT`],
    /// [`DEFAULT_CONNECT_TIMEOUT`], leases judged by the server's clock.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresSettings {
            url: url.into(),
            pool_size: DEFAULT_POOL_SIZE,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            lease_clock: LeaseClock::Server,
        }
    }

    /// At most `size` connections at once (at least 1). A send runs a few statements
    /// at a time, so a handful per process is plenty.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// The server cancels a statement that runs longer (the call fails as
    /// [`RepositoryError::Unavailable`]); `Duration::ZERO` lets statements run
    /// without a limit.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long opening a connection, or waiting for a free one, may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Which clock judges leases (the server's by default).
    pub fn lease_clock(mut self, clock: LeaseClock) -> Self {
        self.lease_clock = clock;
        self
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The pool size.
    pub fn get_pool_size(&self) -> usize {
        self.pool_size
    }

    /// The statement time-out.
    pub fn get_statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// The connect time-out.
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The lease clock.
    pub fn get_lease_clock(&self) -> LeaseClock {
        self.lease_clock
    }

    /// The driver's configuration: the URL parsed, the statement time-out set for
    /// every connection, the connect time-out.
    pub(super) fn pg_config(&self) -> RepoResult<tokio_postgres::Config> {
        let mut config: tokio_postgres::Config =
            self.url.parse().map_err(|e| RepositoryError::Backend {
                store: "PostgreSQL".into(),
                source: Box::new(Message(format!("the PostgreSQL URL is not valid: {e}"))),
            })?;
        let timeout = format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis()
        );
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {timeout}"),
            _ => timeout,
        };
        config.options(options);
        config.connect_timeout(self.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("owner-access");
        }
        Ok(config)
    }

    /// A short name of the server and database, without credentials: what the
    /// adapters' `Display` shows and errors name.
    pub(super) fn describe(config: &tokio_postgres::Config) -> String {
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres");
        format!("{host}:{port}/{db}")
    }
}

/// The TLS connector for `mode`: rustls on the *ring* provider. With `require`, the
/// server's certificate is verified against the platform's roots and the host name;
/// with `prefer`, as libpq does, the connection is encrypted when the server agrees
/// but the certificate is not verified (an attacker who can intercept could refuse
/// TLS anyway, so `prefer` only protects against passive listening). `disable` never
/// starts TLS.
pub(super) fn tls(mode: SslMode) -> RepoResult<MakeRustlsConnect> {
    let fail = |message: String| RepositoryError::Backend {
        store: "PostgreSQL".into(),
        source: Box::new(Message(message)),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(format!("TLS configuration: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::Require {
        Arc::new(
            rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| fail(format!("TLS root certificates: {e}")))?,
        )
    } else {
        Arc::new(Unverified {
            algorithms: provider.signature_verification_algorithms,
        })
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `sslmode=prefer`'s verifier: any certificate, but the handshake must still be
/// signed by the key in the certificate presented.
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        for (url, shown) in [
            (
                "postgres://app:s3cret@db.example.com:5432/hoa?sslmode=require",
                "postgres://app:***@db.example.com:5432/hoa?sslmode=require",
            ),
            ("postgres://app@db/hoa", "postgres://app@db/hoa"),
            (
                "host=db user=app password=s3cret dbname=hoa",
                "host=db user=app password=*** dbname=hoa",
            ),
        ] {
            let debug = format!("{:?}", PostgresSettings::new(url));
            assert!(debug.contains(shown), "{debug}");
            assert!(!debug.contains("s3cret"), "{debug}");
        }
    }
}
