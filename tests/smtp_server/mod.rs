//! An SMTP server run in-process for tests: mailin-embedded with a handler that records
//! every transaction and answers according to the recipient's local part
//! (`tempfail-rcpt…` 451, `reject-rcpt…` 550, `tempfail-data…` 452, `close-data…` 421,
//! `reject-data…` 554, `slow-…` a slow final reply). AUTH accepts `ann` /
//! `s3cret-Pa55`. Shared by the transport tests and the CLI tests.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailin_embedded::response::{AUTH_OK, INVALID_CREDENTIALS, OK};
use mailin_embedded::{AuthMechanism, Handler, Response, Server, SslConfig};
use owner_access::adapters::smtp::{Security, SmtpSettings};
use owner_access::domain::EmailAddress;
use owner_access::transport::Envelope;

pub const USER: &str = "ann";
pub const PASSWORD: &str = "s3cret-Pa55";

/// One accepted transaction, as the server saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which connection (one handler clone per connection).
    pub conn: usize,
    pub from: String,
    pub to: Vec<String>,
    pub bytes: Vec<u8>,
    /// The user the session authenticated as.
    pub user: Option<String>,
}

#[derive(Default)]
pub struct Shared {
    pub next_conn: AtomicUsize,
    pub received: Mutex<Vec<Received>>,
    /// Recipients the server has seen in RCPT TO (accepted or not).
    pub rcpts: Mutex<Vec<String>>,
    /// How long each final reply to a message waits, in milliseconds (0 by default):
    /// a server of some speed, for sends that are killed or paused midway.
    pub delay_ms: AtomicU64,
}

#[derive(Clone)]
pub struct Recorder {
    pub shared: Arc<Shared>,
    pub conn: Option<usize>,
    pub user: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    data: Vec<u8>,
}

fn reply(code: u16, text: &str) -> Response {
    Response::custom(code, text.to_owned())
}

impl Handler for Recorder {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        if self.conn.is_none() {
            self.conn = Some(self.shared.next_conn.fetch_add(1, Ordering::SeqCst));
        }
        OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_owned();
        self.to.clear();
        self.data.clear();
        OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        self.shared.rcpts.lock().unwrap().push(to.to_owned());
        if to.starts_with("tempfail-rcpt") {
            return reply(451, "4.2.1 Mailbox busy, try again later");
        }
        if to.starts_with("reject-rcpt") {
            return reply(550, "5.1.1 No such user here");
        }
        self.to.push(to.to_owned());
        OK
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        if to.iter().any(|t| t.starts_with("tempfail-data")) {
            return reply(452, "4.3.1 Insufficient system storage");
        }
        if to.iter().any(|t| t.starts_with("close-data")) {
            return reply(421, "4.3.2 Shutting down, closing connection");
        }
        if to.iter().any(|t| t.starts_with("reject-data")) {
            return reply(554, "5.7.1 Message refused");
        }
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if self.to.iter().any(|t| t.starts_with("slow-")) {
            std::thread::sleep(Duration::from_millis(1500));
        }
        let delay = self.shared.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        self.shared.received.lock().unwrap().push(Received {
            conn: self.conn.unwrap_or(usize::MAX),
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            bytes: std::mem::take(&mut self.data),
            user: self.user.clone(),
        });
        OK
    }

    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        self.check(user, password)
    }

    fn auth_login(&mut self, user: &str, password: &str) -> Response {
        self.check(user, password)
    }
}

impl Recorder {
    fn check(&mut self, user: &str, password: &str) -> Response {
        if user == "ann" && password == "s3cret-Pa55" {
            self.user = Some(user.to_owned());
            AUTH_OK
        } else {
            INVALID_CREDENTIALS
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// The CA certificate (PEM) that signed the server's certificate, with TLS.
    pub ca_pem: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub fn start(tls: bool, auth: bool) -> Self {
        Self::start_with(tls.then_some(&["localhost", "127.0.0.1"][..]), auth)
    }

    /// With TLS when `names` is given: a certificate for those names.
    pub fn start_with(names: Option<&[&str]>, auth: bool) -> Self {
        let shared = Arc::new(Shared::default());
        let handler = Recorder {
            shared: shared.clone(),
            conn: None,
            user: None,
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = Server::new(handler);
        server
            .with_name("mailin.test")
            .with_num_threads(24)
            .with_tcp_listener(listener);
        let (mut ca_pem, mut dir) = (None, None);
        if let Some(names) = names {
            let (ca, cert, key) = certificates(names);
            let d = tempfile::tempdir().unwrap();
            let cert_path = d.path().join("cert.pem");
            let key_path = d.path().join("key.pem");
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
            server
                .with_ssl(SslConfig::SelfSigned {
                    cert_path: cert_path.to_string_lossy().into_owned(),
                    key_path: key_path.to_string_lossy().into_owned(),
                })
                .unwrap();
            ca_pem = Some(ca);
            dir = Some(d);
        }
        if auth {
            server
                .with_auth(AuthMechanism::Plain)
                .with_auth(AuthMechanism::Login);
        }
        std::thread::spawn(move || {
            if let Err(e) = server.serve() {
                panic!("mailin stopped: {e}");
            }
        });
        Self {
            addr,
            shared,
            ca_pem,
            _dir: dir,
        }
    }

    pub fn plain() -> Self {
        Self::start(false, false)
    }

    pub fn settings(&self, security: Security) -> SmtpSettings {
        SmtpSettings::new("127.0.0.1", self.addr.port(), security)
            .with_helo_name("client.test")
            .with_timeouts(Duration::from_secs(5), Duration::from_secs(5))
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn received_by(&self, to: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.to.iter().any(|t| t == to))
            .collect()
    }

    /// The server's mail as a conformance-suite sink.
    pub fn sink(&self) -> impl Fn() -> Vec<(Envelope, Vec<u8>)> + Send + Sync + use<> {
        let shared = self.shared.clone();
        move || {
            shared
                .received
                .lock()
                .unwrap()
                .iter()
                .flat_map(|r| {
                    r.to.iter()
                        .map(|to| (Envelope::new(addr(&r.from), addr(to)), r.bytes.clone()))
                })
                .collect()
        }
    }
}

/// A CA, a server certificate for localhost and 127.0.0.1 signed by it, and the
/// server's key: (CA PEM, certificate PEM, key PEM).
pub fn certificates(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "owner-access test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "mailin.test");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

pub fn addr(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).unwrap()
}
