//! The `owner_access` example sending through a real SMTP server (mailin-embedded, run
//! in this test process on a random loopback port): plain, STARTTLS with AUTH, and the
//! exit statuses for failed deliveries (2) and stopped batches (3).
#![cfg(all(feature = "smtp", feature = "sqlite"))]

mod cli_support;
mod smtp_server;

use std::process::{Command, Output, Stdio};

use cli_support::*;
use smtp_server::*;

const OWNERS: &str = "owner_id,community_id,property_id,first_name,last_name,property_address,primary_email,registered\n\
    a1,maple,u1,Ann,Lee,1 Elm St,ann@example.org,false\n\
    a2,maple,u2,Bo,Ng,2 Elm St,reject-rcpt-bo@example.org,false\n\
    a3,maple,u3,Cy,Roe,3 Elm St,cy@example.org,false\n";

fn session() -> Session {
    let s = Session::new();
    s.write("owners.csv", OWNERS);
    s.imported()
}

fn run_with_password(s: &Session, password: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.arg("--db")
        .arg(s.path("state.db"))
        .args(args)
        .current_dir(s.dir.path())
        .stdin(Stdio::null());
    cmd.env_remove("OA_TEST_SMTP_PASSWORD");
    if let Some(p) = password {
        cmd.env("OA_TEST_SMTP_PASSWORD", p);
    }
    cmd.output().unwrap()
}

#[test]
fn a_permanent_failure_exits_2_and_retry_tries_only_that_owner() {
    let server = TestServer::plain();
    let s = session();
    let url = format!("smtp://127.0.0.1:{}", server.addr.port());
    let out = s.run(&["send", "--community", "maple", "--smtp", &url, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["sent"], 2);
    assert_eq!(report["failed"][0]["owner_id"], "a2");
    assert!(
        report["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("550")
    );
    assert_eq!(server.received().len(), 2);
    for to in ["ann@example.org", "cy@example.org"] {
        let got = server.received_by(to);
        assert_eq!(got.len(), 1, "{to}");
        assert_eq!(got[0].to, [to], "one recipient per transaction");
    }

    let batch = report["batch"].as_str().unwrap().to_owned();
    let out = s.run(&["retry", "--batch", &batch, "--smtp", &url, "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        server.received().len(),
        2,
        "nobody already sent was sent again"
    );
    let rcpts = server.shared.rcpts.lock().unwrap().clone();
    assert_eq!(
        rcpts
            .iter()
            .filter(|r| r.starts_with("reject-rcpt"))
            .count(),
        2,
        "tried once per run, no retry of a 5xx"
    );
}

#[test]
fn starttls_and_auth_with_the_password_from_the_environment() {
    let server = TestServer::start(true, true);
    let s = session();
    let url = format!("smtp://127.0.0.1:{}?starttls=required", server.addr.port());
    let args = [
        "send",
        "--community",
        "maple",
        "--select",
        "a1,a3",
        "--smtp",
        &url,
        "--smtp-user",
        USER,
        "--smtp-password-env",
        "OA_TEST_SMTP_PASSWORD",
        "--insecure-tls",
        "--json",
    ];

    // A refused login is fatal: the batch stops with everyone pending (exit 3), and the
    // password is never printed.
    let out = run_with_password(&s, Some("wrong-Pa55word"), &args);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["pending"], 2);
    assert!(report["stopped"].as_str().unwrap().contains("fatal"));
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains("wrong-Pa55word"));
    }
    assert!(server.received().is_empty());

    // Resumed with the right password, everyone gets their message once.
    let batch = report["batch"].as_str().unwrap().to_owned();
    let resume = [
        "resume",
        "--batch",
        &batch,
        "--smtp",
        &url,
        "--smtp-user",
        USER,
        "--smtp-password-env",
        "OA_TEST_SMTP_PASSWORD",
        "--insecure-tls",
        "--json",
    ];
    let out = run_with_password(&s, Some(PASSWORD), &resume);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["sent"], 2);
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.user.as_deref() == Some(USER)));
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(PASSWORD));
    }

    // Without the variable set: bad input, nothing sent.
    let out = run_with_password(&s, None, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OA_TEST_SMTP_PASSWORD"));
}

#[test]
fn an_unreachable_server_exits_3_with_everyone_pending() {
    let s = session();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("smtp://127.0.0.1:{port}");
    let out = s.run(&["send", "--community", "maple", "--smtp", &url, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["sent"], 0);
    assert_eq!(report["pending"], 3);
    assert_eq!(
        report["failed"].as_array().unwrap().len(),
        0,
        "an outage fails nobody"
    );

    let server = TestServer::plain();
    let batch = report["batch"].as_str().unwrap().to_owned();
    let url = format!("smtp://127.0.0.1:{}", server.addr.port());
    let out = s.run(&["resume", "--batch", &batch, "--smtp", &url, "--json"]);
    assert_eq!(out.status.code(), Some(2), "a2 is refused by the server");
    assert_eq!(json(&out)["sent"], 2);
}
