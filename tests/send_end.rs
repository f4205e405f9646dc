//! What a send leaves behind it: every SMTP connection it opened is closed with QUIT
//! (checked on a real SMTP conversation over loopback), every message says it was
//! sent automatically, and the recap shows the batch in a form spam filters do not
//! take for a Bitcoin address.
#![cfg(feature = "smtp")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use owner_access::adapters::smtp::{SmtpSettings, SmtpTransport};
use owner_access::{OwnerAccess, Selection, SendOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What one connection to the server did.
#[derive(Debug, Default, Clone)]
struct Session {
    messages: usize,
    quit: bool,
}

/// A minimal SMTP server on 127.0.0.1 that accepts everything and records, per
/// connection, the messages and whether the client said QUIT before closing.
async fn smtp_server() -> (u16, Arc<Mutex<Vec<Session>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sessions: Arc<Mutex<Vec<Session>>> = Arc::default();
    let all = sessions.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let all = all.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut session = Session::default();
                let _ = write.write_all(b"220 test ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            session.messages += 1;
                            let _ = write.write_all(b"250 2.0.0 queued\r\n").await;
                        }
                        continue;
                    }
                    let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-test\r\n250 PIPELINING\r\n",
                        "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 2.0.0 ok\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            session.quit = true;
                            let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                            break;
                        }
                        _ => b"502 5.5.2 unknown\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        break;
                    }
                }
                all.lock().unwrap().push(session);
            });
        }
    });
    (port, sessions)
}

#[tokio::test]
async fn a_send_closes_every_smtp_connection_with_quit() {
    let (port, sessions) = smtp_server().await;
    let w = world(12).await;
    let settings = SmtpSettings::from_url(&format!("smtp://127.0.0.1:{port}"))
        .unwrap()
        .with_connections(3);
    let service = OwnerAccess::builder(
        w.repo.clone(),
        Arc::new(SmtpTransport::new(settings).unwrap()),
    )
    .sender("Owner Portal <no-reply@portal.example.com>")
    .portal_url(PORTAL)
    .send_options(SendOptions {
        concurrency: 3,
        ..SendOptions::default()
    })
    .build()
    .unwrap();
    let roster_ids: Selection = (0..12).map(|i| oid(&format!("e{i}"))).collect();
    let invite = service.compose(&w.community, &roster_ids).await.unwrap();
    let review = service.review(&invite).await.unwrap();
    let report = service.send(review).await.unwrap();
    assert_eq!(report.sent, 12);
    // The server records a session when its connection ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen: usize = sessions.lock().unwrap().iter().map(|s| s.messages).sum();
        if seen == 12 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sessions = sessions.lock().unwrap().clone();
    assert!(!sessions.is_empty() && sessions.len() <= 3, "{sessions:?}");
    assert_eq!(sessions.iter().map(|s| s.messages).sum::<usize>(), 12);
    assert!(
        sessions.iter().all(|s| s.quit),
        "a connection closed without QUIT: {sessions:?}"
    );
}

#[tokio::test]
async fn invitations_and_recaps_are_auto_submitted_and_the_recap_spaces_the_batch_id() {
    use mailparse::MailHeaderMap;
    let w = world(2).await;
    let invite = w
        .service
        .compose(&w.community, &Selection::of([oid("e0"), oid("e1")]))
        .await
        .unwrap()
        .with_summary_to("manager@maplegrove.example.org");
    let review = w.service.review(&invite).await.unwrap();
    let report = w.service.send(review).await.unwrap();
    let batch = report.batch.unwrap();
    let messages = w.transport.messages();
    assert_eq!(messages.len(), 3, "two invitations and the recap");
    for m in &messages {
        let parsed = mailparse::parse_mail(&m.bytes).unwrap();
        assert_eq!(
            parsed.headers.get_all_values("Auto-Submitted"),
            ["auto-generated"]
        );
    }
    let recap = messages
        .iter()
        .find(|m| m.envelope.to.as_str() == "manager@maplegrove.example.org")
        .unwrap();
    let text = text_part(&recap.bytes);
    let hex = batch.as_str().trim_start_matches("b-");
    assert!(
        text.contains(&format!(
            "Batch b-{} {} {} {}",
            &hex[..8],
            &hex[8..16],
            &hex[16..24],
            &hex[24..]
        )),
        "{text}"
    );
    // No run of the id long enough for a wallet-address rule (29 or more
    // characters) is left anywhere in the body.
    for start in 0..hex.len().saturating_sub(25) {
        assert!(!text.contains(&hex[start..start + 25]), "{text}");
    }
    assert!(
        text.contains("created 26 November 2026 at 14:00 UTC"),
        "{text}"
    );
}
