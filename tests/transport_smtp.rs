//! SmtpTransport against a real SMTP server run in-process: mailin-embedded (a
//! dev-dependency, so this runs in `cargo test --all-features` with nothing
//! installed), on random free ports on 127.0.0.1. No mocks: the server parses the
//! SMTP dialogue, undoes dot-stuffing, does STARTTLS (OpenSSL) and AUTH.
//!
//! What mailin cannot model (a 4xx or 5xx at the end of DATA, RSET inside an
//! authenticated session, implicit TLS) is covered against aiosmtpd in
//! `transport_smtp_external.rs`.
#![cfg(feature = "smtp")]

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use owner_access::adapters::smtp::{Security, SmtpSettings, SmtpTransport};
use owner_access::domain::{Community, CommunityId, Owner, OwnerId, PropertyId};
use owner_access::prelude::*;
use owner_access::transport::{Envelope, ErrorClass, MailTransport, TransportError};
use owner_access::{InMemoryRepository, OwnerAccess, Selection, SendOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod smtp_server;
use smtp_server::*;

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

fn transport(settings: SmtpSettings) -> SmtpTransport {
    SmtpTransport::new(settings).unwrap()
}

async fn send(t: &SmtpTransport, to: &str, body: &str) -> Result<(), TransportError> {
    t.send(&envelope(to), &message(to, body)).await.map(|_| ())
}

fn assert_class(e: &TransportError, class: ErrorClass, connection: bool) {
    assert_eq!(
        (e.class(), e.is_connection()),
        (class, connection),
        "unexpected classification of {e:?}"
    );
}

// ---------------------------------------------------------------------------------
// Plain SMTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_conformance_suite_passes_against_the_server() {
    let server = TestServer::plain();
    let smtp = transport(server.settings(Security::Plain));
    let sink = server.sink();
    owner_access::testing::transport_conformance(&smtp, &sink)
        .await
        .unwrap_or_else(|failures| panic!("{failures:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_comes_from_the_envelope_never_the_headers() {
    let server = TestServer::plain();
    let smtp = transport(server.settings(Security::Plain));
    // Headers name other people; the envelope alone decides.
    let bytes =
        b"From: Someone Else <boss@elsewhere.example>\r\nTo: <victim@elsewhere.example>\r\n\
Cc: <cc@elsewhere.example>\r\nBcc: <bcc@elsewhere.example>\r\nSubject: x\r\n\r\nhello\r\n";
    let env = Envelope::new(
        addr("portal@hoa.example.com"),
        addr("ann@owners.example.org"),
    );
    let accepted = smtp.send(&env, bytes).await.unwrap();
    assert!(accepted.response.unwrap().starts_with("250"));
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].from, "portal@hoa.example.com");
    assert_eq!(got[0].to, vec!["ann@owners.example.org".to_owned()]);
    assert_eq!(
        *server.shared.rcpts.lock().unwrap(),
        vec!["ann@owners.example.org".to_owned()]
    );
    assert_eq!(got[0].bytes, bytes.to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idn_domain_goes_on_the_wire_in_ascii() {
    let server = TestServer::plain();
    let smtp = transport(server.settings(Security::Plain));
    let env = Envelope::new(addr("portal@hoa.example.com"), addr("ann@bücher.example"));
    smtp.send(&env, b"Subject: x\r\n\r\nhi\r\n").await.unwrap();
    assert_eq!(
        server.received()[0].to,
        vec!["ann@xn--bcher-kva.example".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_messages_over_one_connection_arrive_intact_in_n_transactions() {
    let server = TestServer::plain();
    let smtp = transport(
        server
            .settings(Security::Plain)
            .with_connections(1)
            .with_messages_per_connection(1000),
    );
    let n = 25;
    let mut sent = Vec::new();
    for i in 0..n {
        let to = format!("owner{i}@owners.example.org");
        let body = format!("Message {i}.\r\n.\r\n..dots {i}\r\nend\r\n");
        let bytes = message(&to, &body);
        smtp.send(&envelope(&to), &bytes).await.unwrap();
        sent.push((to, bytes));
    }
    let got = server.received();
    assert_eq!(got.len(), n, "one transaction per message");
    let conns: BTreeSet<usize> = got.iter().map(|r| r.conn).collect();
    assert_eq!(conns.len(), 1, "all over one connection: {conns:?}");
    for ((to, bytes), r) in sent.iter().zip(&got) {
        assert_eq!(&r.to, &vec![to.clone()]);
        assert_eq!(&r.bytes, bytes, "message to {to} altered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_connection_after_the_configured_number_of_messages() {
    let server = TestServer::plain();
    let smtp = transport(
        server
            .settings(Security::Plain)
            .with_connections(1)
            .with_messages_per_connection(5),
    );
    for i in 0..12 {
        send(&smtp, &format!("o{i}@owners.example.org"), "hi\r\n")
            .await
            .unwrap();
    }
    let got = server.received();
    let mut per_conn = std::collections::BTreeMap::<usize, usize>::new();
    for r in &got {
        *per_conn.entry(r.conn).or_default() += 1;
    }
    let counts: Vec<usize> = per_conn.values().copied().collect();
    assert_eq!(counts, vec![5, 5, 2], "{per_conn:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_the_fixed_set_of_connections() {
    let server = TestServer::plain();
    let smtp = Arc::new(transport(
        server.settings(Security::Plain).with_connections(3),
    ));
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let smtp = smtp.clone();
            tokio::spawn(
                async move { send(&smtp, &format!("c{i}@owners.example.org"), "hi\r\n").await },
            )
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got = server.received();
    assert_eq!(got.len(), 60);
    let conns: BTreeSet<usize> = got.iter().map(|r| r.conn).collect();
    assert!(
        !conns.is_empty() && conns.len() <= 3,
        "at most 3 connections, saw {conns:?}"
    );
}

// ---------------------------------------------------------------------------------
// Replies and failures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_to_rcpt_is_transient_keeps_the_reply_and_the_connection() {
    let server = TestServer::plain();
    let smtp = transport(server.settings(Security::Plain).with_connections(1));
    send(&smtp, "before@owners.example.org", "hi\r\n")
        .await
        .unwrap();
    let e = send(&smtp, "tempfail-rcpt@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Transient, false);
    assert_eq!(e.code(), Some(451));
    assert_eq!(e.enhanced(), Some("4.2.1"));
    assert!(e.message().contains("Mailbox busy"), "{e:?}");
    assert!(e.summary().starts_with("451 4.2.1 "), "{}", e.summary());
    // RSET, then the same connection carries the next message.
    send(&smtp, "after@owners.example.org", "hi\r\n")
        .await
        .unwrap();
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].conn, got[1].conn,
        "the connection was reused after RSET"
    );
    assert!(
        server
            .received_by("tempfail-rcpt@owners.example.org")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_to_rcpt_is_permanent_for_this_recipient_only() {
    let server = TestServer::plain();
    let smtp = transport(server.settings(Security::Plain).with_connections(1));
    let e = send(&smtp, "reject-rcpt@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Permanent, false);
    assert_eq!((e.code(), e.enhanced()), (Some(550), Some("5.1.1")));
    assert!(e.message().contains("No such user"), "{e:?}");
    send(&smtp, "next@owners.example.org", "hi\r\n")
        .await
        .unwrap();
    assert_eq!(server.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_data_are_classified() {
    let server = TestServer::plain();
    let smtp = transport(server.settings(Security::Plain).with_connections(1));
    let e = send(&smtp, "tempfail-data@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Transient, false);
    assert_eq!((e.code(), e.enhanced()), (Some(452), Some("4.3.1")));
    let e = send(&smtp, "reject-data@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Permanent, false);
    assert_eq!((e.code(), e.enhanced()), (Some(554), Some("5.7.1")));
    send(&smtp, "ok@owners.example.org", "hi\r\n")
        .await
        .unwrap();
    assert_eq!(server.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_421_closes_the_connection_and_the_next_message_reconnects() {
    let server = TestServer::plain();
    let smtp = transport(server.settings(Security::Plain).with_connections(1));
    send(&smtp, "first@owners.example.org", "hi\r\n")
        .await
        .unwrap();
    let e = send(&smtp, "close-data@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Transient, true);
    assert_eq!(e.code(), Some(421));
    send(&smtp, "second@owners.example.org", "hi\r\n")
        .await
        .unwrap();
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].conn, got[1].conn, "a fresh connection after 421");
}

/// A TCP proxy in front of the real server that cuts both sides of a connection
/// when the client sends `trigger`.
async fn cutting_proxy(upstream: SocketAddr, trigger: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if buf[..n].windows(trigger.len()).any(|w| w == trigger) {
                        break; // drop both connections mid-transaction
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                down.abort();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_transaction_is_transient_and_reconnects() {
    let server = TestServer::plain();
    let proxy = cutting_proxy(server.addr, b"CUT-THE-LINE").await;
    let smtp = transport(
        SmtpSettings::new("127.0.0.1", proxy.port(), Security::Plain)
            .with_connections(1)
            .with_timeouts(Duration::from_secs(5), Duration::from_secs(5)),
    );
    send(&smtp, "first@owners.example.org", "hi\r\n")
        .await
        .unwrap();
    let e = send(
        &smtp,
        "dropped@owners.example.org",
        "line one\r\nCUT-THE-LINE\r\n",
    )
    .await
    .unwrap_err();
    assert_class(&e, ErrorClass::Transient, true);
    assert_eq!(e.code(), None);
    assert!(server.received_by("dropped@owners.example.org").is_empty());
    // The engine's retry of the same message gets a fresh connection.
    send(
        &smtp,
        "dropped@owners.example.org",
        "line one\r\nintact\r\n",
    )
    .await
    .unwrap();
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].conn, got[1].conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_out_after_the_final_dot_is_transient() {
    let server = TestServer::plain();
    let smtp = transport(
        server
            .settings(Security::Plain)
            .with_connections(1)
            .with_timeouts(Duration::from_secs(5), Duration::from_millis(500)),
    );
    let bytes = message("slow-ann@owners.example.org", "hi\r\n");
    let e = smtp
        .send(&envelope("slow-ann@owners.example.org"), &bytes)
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Transient, true);
    assert!(e.message().contains("end of DATA"), "{e:?}");
    // The outcome was unknown: the server did take it. The retry carries the same
    // bytes (the same Message-ID), so the copy can be recognised.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&smtp, "next@owners.example.org", "hi\r\n")
        .await
        .unwrap();
    let slow = server.received_by("slow-ann@owners.example.org");
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].bytes, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_a_transient_connection_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let smtp = transport(SmtpSettings::new("127.0.0.1", port, Security::Plain));
    let e = send(&smtp, "ann@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Transient, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_a_connect_time_out() {
    // Accepts TCP but never greets.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let smtp = transport(
        SmtpSettings::new("127.0.0.1", port, Security::Plain)
            .with_timeouts(Duration::from_millis(300), Duration::from_secs(5)),
    );
    let started = Instant::now();
    let e = send(&smtp, "ann@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Transient, true);
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_quit_and_sending_afterwards_reconnects() {
    let server = TestServer::plain();
    let smtp = transport(server.settings(Security::Plain).with_connections(2));
    send(&smtp, "a@owners.example.org", "hi\r\n").await.unwrap();
    smtp.close().await.unwrap();
    send(&smtp, "b@owners.example.org", "hi\r\n").await.unwrap();
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].conn, got[1].conn);
}

#[test]
fn settings_that_cannot_work_are_fatal() {
    for settings in [
        SmtpSettings::new("", 25, Security::Plain),
        SmtpSettings::new("mail.example.com", 25, Security::Plain).with_connections(0),
        SmtpSettings::new("mail.example.com", 465, Security::Tls).with_root_certificate(
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_vec(),
        ),
        SmtpSettings::new("bad host name", 465, Security::Tls),
    ] {
        let e = SmtpTransport::new(settings).unwrap_err();
        assert_class(&e, ErrorClass::Fatal, false);
    }
}

// ---------------------------------------------------------------------------------
// STARTTLS and AUTH

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_trusted_root_passes_the_conformance_suite() {
    let server = TestServer::start(true, false);
    let smtp = transport(
        server
            .settings(Security::StartTls)
            .with_root_certificate(server.ca_pem.clone().unwrap()),
    );
    let sink = server.sink();
    owner_access::testing::transport_conformance(&smtp, &sink)
        .await
        .unwrap_or_else(|failures| panic!("{failures:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_fatal_unless_invalid_certs_are_accepted() {
    let server = TestServer::start(true, false);
    let strict = transport(server.settings(Security::StartTls));
    let e = send(&strict, "ann@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Fatal, false);
    assert!(e.message().contains("TLS"), "{e:?}");
    let lax = transport(
        server
            .settings(Security::StartTls)
            .with_accept_invalid_certs(true),
    );
    send(&lax, "ann@owners.example.org", "hi\r\n")
        .await
        .unwrap();
    assert_eq!(server.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_is_fatal() {
    // Trusted, but issued for another name than the one connected to.
    let server = TestServer::start_with(Some(&["mail.elsewhere.example"]), false);
    let smtp = transport(
        server
            .settings(Security::StartTls)
            .with_root_certificate(server.ca_pem.clone().unwrap()),
    );
    let e = send(&smtp, "ann@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Fatal, false);
    assert!(e.message().contains("TLS"), "{e:?}");
    assert!(server.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required_but_not_offered_is_fatal() {
    let server = TestServer::plain();
    let smtp = transport(
        server
            .settings(Security::StartTls)
            .with_accept_invalid_certs(true),
    );
    let e = send(&smtp, "ann@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Fatal, false);
    assert!(e.message().contains("STARTTLS"), "{e:?}");
    assert!(server.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_after_starttls_authenticates_every_connection() {
    let server = TestServer::start(true, true);
    let smtp = transport(
        server
            .settings(Security::StartTls)
            .with_root_certificate(server.ca_pem.clone().unwrap())
            .with_credentials("ann", "s3cret-Pa55")
            .with_connections(2),
    );
    for i in 0..6 {
        send(&smtp, &format!("auth{i}@owners.example.org"), "hi\r\n")
            .await
            .unwrap();
    }
    let got = server.received();
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|r| r.user.as_deref() == Some("ann")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_authentication_is_fatal_and_never_shows_the_password() {
    let server = TestServer::start(true, true);
    let settings = server
        .settings(Security::StartTls)
        .with_root_certificate(server.ca_pem.clone().unwrap())
        .with_credentials("ann", "wrong-Pa55word");
    assert!(!format!("{settings:?}").contains("wrong-Pa55word"));
    let smtp = transport(settings);
    assert!(!format!("{smtp:?}").contains("wrong-Pa55word"));
    let e = send(&smtp, "ann@owners.example.org", "hi\r\n")
        .await
        .unwrap_err();
    assert_class(&e, ErrorClass::Fatal, false);
    assert_eq!(e.code(), Some(535));
    for shown in [format!("{e}"), format!("{e:?}"), e.summary()] {
        assert!(!shown.contains("wrong-Pa55word"), "{shown}");
    }
    assert!(server.received().is_empty());
}

// ---------------------------------------------------------------------------------
// The whole workflow

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_access_sends_a_batch_through_smtp() {
    let server = TestServer::plain();
    let smtp = Arc::new(transport(
        server.settings(Security::Plain).with_connections(4),
    ));
    let repo = Arc::new(InMemoryRepository::new());
    let service = OwnerAccess::builder(repo.clone(), smtp.clone())
        .sender("Owner Portal <portal@hoa.example.com>")
        .portal_url("https://portal.example.com/register")
        .send_options(SendOptions {
            concurrency: 8,
            ..SendOptions::default()
        })
        .build()
        .unwrap();
    let community = CommunityId::new("maple-grove").unwrap();
    repo.upsert_community(&Community::new(community.clone(), "Maple Grove HOA"))
        .await
        .unwrap();
    let owners: Vec<Owner> = (0..30)
        .map(|i| {
            let email = if i == 7 {
                "reject-rcpt-7@owners.example.org".to_owned()
            } else {
                format!("owner{i}@owners.example.org")
            };
            Owner::new(
                OwnerId::new(format!("o{i}")).unwrap(),
                community.clone(),
                PropertyId::new(format!("p{i}")).unwrap(),
                "Ann",
                format!("Lee {i}"),
            )
            .with_primary_email(email)
        })
        .collect();
    repo.upsert_owners(
        &owners,
        owner_access::Clock::now(&owner_access::SystemClock),
    )
    .await
    .unwrap();
    let all: Selection = (0..30)
        .map(|i| OwnerId::new(format!("o{i}")).unwrap())
        .collect();
    let invite = service.compose(&community, &all).await.unwrap();
    let review = service.review(&invite).await.unwrap();
    assert!(review.problems.is_empty(), "{:?}", review.problems);
    let report = service.send(review).await.unwrap();
    smtp.close().await.unwrap();

    assert_eq!(report.sent, 29, "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert!(
        report.failed[0].error.starts_with("550 5.1.1"),
        "{:?}",
        report.failed
    );
    let got = server.received();
    assert_eq!(got.len(), 29);
    let conns: BTreeSet<usize> = got.iter().map(|r| r.conn).collect();
    assert!(conns.len() <= 4, "{conns:?}");
    for r in &got {
        assert_eq!(r.from, "portal@hoa.example.com");
        assert_eq!(r.to.len(), 1);
        let parsed = mailparse::parse_mail(&r.bytes).unwrap();
        let to = parsed
            .headers
            .iter()
            .find(|h| h.get_key_ref().eq_ignore_ascii_case("to"))
            .unwrap()
            .get_value();
        assert!(to.contains(&r.to[0]), "To {to} vs envelope {:?}", r.to);
        let text = String::from_utf8_lossy(&r.bytes);
        assert!(
            text.contains("token="),
            "the personal link is in the message"
        );
    }
}
