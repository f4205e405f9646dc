//! SmtpTransport against independent SMTP servers that CI installs: Python's
//! aiosmtpd (STARTTLS, implicit TLS, AUTH; covers what the in-process server cannot
//! model: RSET inside an authenticated session, a 4xx or 5xx at the end of DATA) and
//! Postfix's smtp-sink (PIPELINING, a 421 mid-transaction, throughput).
//!
//! Switched on by environment variables that `.ci/run` sets:
//! `OWNER_ACCESS_AIOSMTPD=/path/to/python` (a Python with aiosmtpd) and
//! `OWNER_ACCESS_SMTP_SINK=/usr/sbin/smtp-sink`. Without them each test says it was
//! skipped and passes; with `CI=true` a missing server fails the test.
#![cfg(feature = "smtp")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use owner_access::adapters::smtp::{Security, SmtpSettings, SmtpTransport};
use owner_access::domain::{Community, CommunityId, EmailAddress, Owner, OwnerId, PropertyId};
use owner_access::prelude::*;
use owner_access::transport::{Envelope, ErrorClass, MailTransport, TransportError};
use owner_access::{InMemoryRepository, OwnerAccess, Selection};

/// The server named by `var`, or `None` (skipped) when it is not set outside CI.
fn external(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => {
            assert!(Path::new(&v).exists(), "{var}={v} does not exist");
            Some(v)
        }
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but {var} is not set: {what} is required in CI")
        }
        _ => {
            eprintln!("skipped: set {var} to run this test against {what}");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads the server's first stdout line, `ready PORT`, printed once it listens on
/// the port it bound itself (port 0: no other process can hold it in between).
fn wait_ready(child: &mut Child) -> u16 {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("the server's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // Python's start-up and the controller's own trial connection take seconds on
    // a loaded machine.
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the server did not report ready within 60 s"));
    match line.trim().strip_prefix("ready ").map(str::parse) {
        Some(Ok(port)) => port,
        _ => panic!(
            "the server did not start (its first line: {line:?}; exit: {:?})",
            child.try_wait()
        ),
    }
}

/// Waits until `child` answers on `port` with a greeting naming `name`: a connect
/// alone can reach another process that took the port between [`free_port`] and
/// the child's bind (then the child exits, and this says so).
fn wait_greeting(port: u16, name: &str, child: &mut Child) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited: {status}"));
        }
        if let Ok(tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut greeting = String::new();
            let _ = BufReader::new(tcp).read_line(&mut greeting);
            if greeting.starts_with("220 ") && greeting.contains(name) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no greeting naming {name} on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn addr(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).unwrap()
}

fn envelope(to: &str) -> Envelope {
    Envelope::new(addr("portal@hoa.example.com"), addr(to))
}

fn message(to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Owner Portal <portal@hoa.example.com>\r\nTo: <{to}>\r\n\
         Subject: Your owner portal\r\nMessage-ID: <{to}.1@hoa.example.com>\r\n\r\n{body}"
    )
    .into_bytes()
}

async fn send(t: &SmtpTransport, to: &str) -> Result<(), TransportError> {
    t.send(&envelope(to), &message(to, "hello\r\n"))
        .await
        .map(|_| ())
}

fn assert_class(e: &TransportError, class: ErrorClass, connection: bool) {
    assert_eq!(
        (e.class(), e.is_connection()),
        (class, connection),
        "unexpected classification of {e:?}"
    );
}

// ---------------------------------------------------------------------------------
// aiosmtpd

const AIOSMTPD_SERVER: &str = r#"
import base64, json, os, socket, ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, cert, key, dump = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
# The server binds port 0 itself and reports the port it got: a port chosen by the
# test and bound later can be taken by another process in between.
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
port = listener.getsockname()[1]
lock = threading.Lock()
seq = [0]

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("tempfail-rcpt"):
            return "451 4.2.1 Mailbox busy, try again later"
        if address.startswith("reject-rcpt"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(t.startswith("tempfail-eod") for t in envelope.rcpt_tos):
            return "451 4.3.0 Queue full, try again later"
        if any(t.startswith("reject-eod") for t in envelope.rcpt_tos):
            return "554 5.6.0 Content refused"
        user = None
        data = getattr(session, "auth_data", None) or getattr(session, "login_data", None)
        if session.authenticated and isinstance(data, LoginPassword):
            user = data.login.decode()
        elif session.authenticated and isinstance(data, bytes):
            user = data.decode()
        with lock:
            seq[0] += 1
            n = seq[0]
        record = {
            "conn": "%s:%s" % tuple(session.peer[:2]),
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "user": user,
            "data": base64.b64encode(envelope.original_content).decode(),
        }
        tmp = os.path.join(dump, ".%d.tmp" % n)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(dump, "%08d.json" % n))
        return "250 2.0.0 Ok: queued as %d" % n

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login == b"ann" and auth_data.password == b"s3cret-Pa55")
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

class BoundController(Controller):
    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=listener,
                                       ssl=self.ssl_context)

context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
if mode == "starttls":
    controller = BoundController(Handler(), hostname="127.0.0.1", port=port,
                            tls_context=context, require_starttls=True,
                            authenticator=authenticator, auth_require_tls=True)
else:
    controller = BoundController(Handler(), hostname="127.0.0.1", port=port,
                            ssl_context=context, authenticator=authenticator,
                            auth_require_tls=False)
controller.start()
print("ready", port, flush=True)
threading.Event().wait()
"#;

#[derive(Debug)]
struct Received {
    conn: String,
    from: String,
    to: Vec<String>,
    user: Option<String>,
    bytes: Vec<u8>,
}

struct Aiosmtpd {
    port: u16,
    ca_pem: String,
    dump: PathBuf,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl Aiosmtpd {
    fn start(python: &str, implicit_tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = certificates();
        let script = dir.path().join("server.py");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let dump = dir.path().join("mail");
        std::fs::create_dir(&dump).unwrap();
        std::fs::write(&script, AIOSMTPD_SERVER).unwrap();
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let child = Command::new(python)
            .arg(&script)
            .arg(if implicit_tls { "implicit" } else { "starttls" })
            .args([&cert_path, &key_path, &dump])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python}: {e}"));
        let mut process = Process(child);
        let port = wait_ready(&mut process.0);
        Self {
            port,
            ca_pem: ca,
            dump,
            _dir: dir,
            _process: process,
        }
    }

    fn settings(&self, security: Security) -> SmtpSettings {
        SmtpSettings::new("127.0.0.1", self.port, security)
            .with_root_certificate(self.ca_pem.clone())
            .with_credentials("ann", "s3cret-Pa55")
            .with_timeouts(Duration::from_secs(10), Duration::from_secs(10))
    }

    fn received(&self) -> Vec<Received> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dump)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                use base64::Engine;
                Received {
                    conn: v["conn"].as_str().unwrap().to_owned(),
                    from: v["from"].as_str().unwrap().to_owned(),
                    to: v["to"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().unwrap().to_owned())
                        .collect(),
                    user: v["user"].as_str().map(str::to_owned),
                    bytes: base64::engine::general_purpose::STANDARD
                        .decode(v["data"].as_str().unwrap())
                        .unwrap(),
                }
            })
            .collect()
    }

    fn sink(&self) -> impl Fn() -> Vec<(Envelope, Vec<u8>)> + Send + Sync + use<'_> {
        move || {
            self.received()
                .into_iter()
                .flat_map(|r| {
                    let from = r.from.clone();
                    r.to.into_iter()
                        .map(move |to| (Envelope::new(addr(&from), addr(&to)), r.bytes.clone()))
                })
                .collect()
        }
    }
}

fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "owner-access test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiosmtpd_starttls_auth_conformance() {
    let Some(python) = external("OWNER_ACCESS_AIOSMTPD", "aiosmtpd") else {
        return;
    };
    let server = Aiosmtpd::start(&python, false);
    let smtp = SmtpTransport::new(server.settings(Security::StartTls)).unwrap();
    let sink = server.sink();
    owner_access::testing::transport_conformance(&smtp, &sink)
        .await
        .unwrap_or_else(|failures| panic!("{failures:#?}"));
    assert!(
        server
            .received()
            .iter()
            .all(|r| r.user.as_deref() == Some("ann"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiosmtpd_implicit_tls_conformance() {
    let Some(python) = external("OWNER_ACCESS_AIOSMTPD", "aiosmtpd") else {
        return;
    };
    let server = Aiosmtpd::start(&python, true);
    let smtp = SmtpTransport::new(server.settings(Security::Tls)).unwrap();
    let sink = server.sink();
    owner_access::testing::transport_conformance(&smtp, &sink)
        .await
        .unwrap_or_else(|failures| panic!("{failures:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiosmtpd_rset_inside_an_authenticated_session() {
    let Some(python) = external("OWNER_ACCESS_AIOSMTPD", "aiosmtpd") else {
        return;
    };
    let server = Aiosmtpd::start(&python, false);
    let smtp = SmtpTransport::new(server.settings(Security::StartTls).with_connections(1)).unwrap();
    send(&smtp, "first@owners.example.org").await.unwrap();
    let e = send(&smtp, "tempfail-rcpt@owners.example.org")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Transient, false);
    assert_eq!((e.code(), e.enhanced()), (Some(451), Some("4.2.1")));
    let e = send(&smtp, "reject-rcpt@owners.example.org")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Permanent, false);
    assert_eq!((e.code(), e.enhanced()), (Some(550), Some("5.1.1")));
    send(&smtp, "second@owners.example.org").await.unwrap();
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].conn, got[1].conn, "the session survived both RSETs");
    assert!(got.iter().all(|r| r.user.as_deref() == Some("ann")));
    assert_eq!(got[1].to, vec!["second@owners.example.org".to_owned()]);
    assert_eq!(got[1].from, "portal@hoa.example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiosmtpd_replies_at_the_end_of_data() {
    let Some(python) = external("OWNER_ACCESS_AIOSMTPD", "aiosmtpd") else {
        return;
    };
    let server = Aiosmtpd::start(&python, false);
    let smtp = SmtpTransport::new(server.settings(Security::StartTls).with_connections(1)).unwrap();
    let e = send(&smtp, "tempfail-eod@owners.example.org")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Transient, false);
    assert_eq!((e.code(), e.enhanced()), (Some(451), Some("4.3.0")));
    assert!(e.message().contains("end of DATA"), "{e:?}");
    let e = send(&smtp, "reject-eod@owners.example.org")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Permanent, false);
    assert_eq!((e.code(), e.enhanced()), (Some(554), Some("5.6.0")));
    send(&smtp, "after@owners.example.org").await.unwrap();
    send(&smtp, "again@owners.example.org").await.unwrap();
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].conn, got[1].conn, "the connection was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiosmtpd_refused_authentication_is_fatal() {
    let Some(python) = external("OWNER_ACCESS_AIOSMTPD", "aiosmtpd") else {
        return;
    };
    let server = Aiosmtpd::start(&python, false);
    let smtp = SmtpTransport::new(
        server
            .settings(Security::StartTls)
            .with_credentials("ann", "not-the-Pa55word"),
    )
    .unwrap();
    let e = send(&smtp, "ann@owners.example.org").await.unwrap_err();
    assert_class(&e, ErrorClass::Fatal, false);
    assert!(!format!("{e:?}").contains("not-the-Pa55word"));
    assert!(server.received().is_empty());
}

// ---------------------------------------------------------------------------------
// smtp-sink

struct SmtpSink {
    port: u16,
    _process: Process,
}

impl SmtpSink {
    /// smtp-sink binds the port it is given, so the port is chosen here and may be
    /// taken by another process before smtp-sink binds it: the greeting carries a
    /// name of this start's own, and a start that lost its port is tried again.
    fn start(binary: &str, options: &[&str]) -> Self {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false);
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let name = format!("sink-{}-{port}-{attempt}.test", std::process::id());
            let mut cmd = Command::new(binary);
            if root {
                cmd.args(["-u", "nobody"]);
            }
            let child = cmd
                .args(["-h", &name])
                .args(options)
                .arg(format!("127.0.0.1:{port}"))
                .arg("256")
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
            let mut process = Process(child);
            match wait_greeting(port, &name, &mut process.0) {
                Ok(()) => {
                    return Self {
                        port,
                        _process: process,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("smtp-sink did not start in 5 attempts: {last}")
    }

    fn settings(&self) -> SmtpSettings {
        SmtpSettings::new("127.0.0.1", self.port, Security::Plain)
            .with_timeouts(Duration::from_secs(10), Duration::from_secs(10))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sink_throughput_through_owner_access() {
    let Some(binary) = external("OWNER_ACCESS_SMTP_SINK", "Postfix smtp-sink") else {
        return;
    };
    let sink = SmtpSink::start(&binary, &[]);
    let smtp = Arc::new(SmtpTransport::new(sink.settings()).unwrap());
    let repo = Arc::new(InMemoryRepository::new());
    let service = OwnerAccess::builder(repo.clone(), smtp.clone())
        .sender("Owner Portal <portal@hoa.example.com>")
        .portal_url("https://portal.example.com/register")
        .build()
        .unwrap();
    let community = CommunityId::new("big-towers").unwrap();
    repo.upsert_community(&Community::new(community.clone(), "Big Towers HOA"))
        .await
        .unwrap();
    let n = 3000;
    let owners: Vec<Owner> = (0..n)
        .map(|i| {
            Owner::new(
                OwnerId::new(format!("o{i}")).unwrap(),
                community.clone(),
                PropertyId::new(format!("p{i}")).unwrap(),
                "Ann",
                format!("Lee {i}"),
            )
            .with_primary_email(format!("owner{i}@owners.example.org"))
        })
        .collect();
    repo.upsert_owners(
        &owners,
        owner_access::Clock::now(&owner_access::SystemClock),
    )
    .await
    .unwrap();
    let all: Selection = (0..n)
        .map(|i| OwnerId::new(format!("o{i}")).unwrap())
        .collect();
    let review = service
        .review(&service.compose(&community, &all).await.unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    let report = service.send(review).await.unwrap();
    let elapsed = started.elapsed();
    smtp.close().await.unwrap();
    assert_eq!(report.sent, n, "{:?}", report.failed.first());
    let rate = n as f64 / elapsed.as_secs_f64();
    eprintln!("{n} invitations into smtp-sink in {elapsed:?}: {rate:.0} messages/s");
    // A floor far below what loopback does even in a debug build (thousands a
    // second): it fails on a per-message stall such as Nagle + delayed ACK
    // (about 25 a second) or a connection per message.
    assert!(rate > 300.0, "{rate:.0} messages/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sink_pipelined_transactions_on_one_connection() {
    let Some(binary) = external("OWNER_ACCESS_SMTP_SINK", "Postfix smtp-sink") else {
        return;
    };
    let sink = SmtpSink::start(&binary, &[]);
    let smtp = SmtpTransport::new(sink.settings().with_connections(1)).unwrap();
    for i in 0..200 {
        let accepted = smtp
            .send(
                &envelope(&format!("p{i}@owners.example.org")),
                &message("p@owners.example.org", ".dot\r\n.\r\nend\r\n"),
            )
            .await
            .unwrap();
        assert!(accepted.response.unwrap().starts_with("250"));
    }
    smtp.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sink_421_mid_transaction_is_a_transient_connection_error() {
    let Some(binary) = external("OWNER_ACCESS_SMTP_SINK", "Postfix smtp-sink") else {
        return;
    };
    // 421 and hang up after every RCPT.
    let sink = SmtpSink::start(&binary, &["-Q", "rcpt"]);
    let smtp = SmtpTransport::new(sink.settings().with_connections(1)).unwrap();
    for _ in 0..2 {
        let e = send(&smtp, "ann@owners.example.org").await.unwrap_err();
        assert_class(&e, ErrorClass::Transient, true);
    }
    // Hang up without a word after the final dot: the outcome is unknown.
    let sink = SmtpSink::start(&binary, &["-q", "."]);
    let smtp = SmtpTransport::new(sink.settings().with_connections(1)).unwrap();
    let e = send(&smtp, "ann@owners.example.org").await.unwrap_err();
    assert_class(&e, ErrorClass::Transient, true);
    assert!(e.message().contains("end of DATA"), "{e:?}");
}
