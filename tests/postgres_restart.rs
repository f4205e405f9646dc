//! A PostgreSQL server restarted in the middle of a send (issue 16: "the send stops
//! with deliveries pending, then resume finishes").
//!
//! The test starts a cluster of its own (initdb and pg_ctl of Debian's PostgreSQL,
//! `/usr/lib/postgresql/*/bin`, in a temporary directory on a free port; as root
//! through `runuser -u postgres --`), never the shared server on 5432. It sends a
//! batch into an SMTP server on loopback that answers each message after a few
//! milliseconds, so the restart (`pg_ctl restart -m fast`, started once a third of
//! the owners were accepted) lands mid-send.
//!
//! What it holds the adapter and the engine to:
//! - a store call while the server is down or starting up is
//!   `RepositoryError::Unavailable`, so the send stops with
//!   `StopReason::StoreUnavailable` and its deliveries pending, nobody sent twice;
//! - once the server is back, the same `PostgresRepository` (its pool's connections
//!   all ended by the restart) works again without being reopened: `resume` on the
//!   same service finishes, every delivery recorded sent once, nobody missing, and
//!   the only second copies are the messages the stopped run reported as
//!   `unrecorded`, each with its first copy's Message-ID.
//!
//! `#[ignore]`d like the other PostgreSQL tests and run by `.ci/run` with
//! `--include-ignored`. Without initdb the test says it was skipped, and under
//! `CI=true` it fails.

mod common;
mod smtp_server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{PORTAL, owner};
use owner_access::adapters::postgres::{PostgresRepository, PostgresSettings};
use owner_access::adapters::smtp::{Security, SmtpTransport};
use owner_access::domain::Community;
use owner_access::prelude::*;
use owner_access::{OwnerAccess, Selection, SendOptions, StopReason};
use smtp_server::TestServer;

/// The newest `/usr/lib/postgresql/N/bin` that has initdb.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL cluster of the test's own, stopped (immediately) and deleted when
/// dropped.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    root: bool,
}

impl Cluster {
    /// initdb, then pg_ctl start on a free port (another port if that one was taken
    /// before the server bound it). `None` (skipped) without initdb outside CI.
    fn start() -> Option<Cluster> {
        let Some(bin) = postgres_bin() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but no /usr/lib/postgresql/*/bin/initdb: install postgresql");
            }
            eprintln!("skipped: no /usr/lib/postgresql/*/bin/initdb (install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = is_root();
        if root {
            // initdb runs as postgres and creates the data directory in here.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let mut cluster = Cluster {
            bin,
            dir,
            port: 0,
            root,
        };
        let data = cluster.data();
        let out = cluster.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                cluster.port,
                cluster.dir.path().display()
            );
            let out = cluster.pg_ctl(&["-o", &options, "start"]);
            if out.status.success() {
                return Some(cluster);
            }
            last = format!("{}\n{}", text(&out), cluster.log());
        }
        panic!("the test's PostgreSQL did not start in 5 attempts: {last}");
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// One of the cluster's programs, as postgres when the test runs as root.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()))
    }

    /// `pg_ctl -D DATA -l LOG -w -t 60 ARGS…`: the server's output goes to its log
    /// (a server writing to our pipe would keep `output()` waiting).
    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data();
        let log = self.dir.path().join("server.log").display().to_string();
        let mut all = vec!["-D", &data, "-l", &log, "-w", "-t", "60"];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Message-ID header of a message as the SMTP server received it.
fn message_id(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap_or_else(|| panic!("no Message-ID in {text}"))
        .trim()
        .to_owned()
}

/// Each recipient's Message-IDs, in the order the server accepted them.
fn copies(server: &TestServer) -> BTreeMap<String, Vec<String>> {
    let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in server.received() {
        for to in &r.to {
            by_owner
                .entry(to.clone())
                .or_default()
                .push(message_id(&r.bytes));
        }
    }
    by_owner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a PostgreSQL server of its own (initdb); run with --include-ignored"]
async fn a_server_restarted_mid_send_stops_it_pending_and_resume_finishes() {
    const OWNERS: usize = 300;
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let cluster = Arc::new(cluster);
    let repo = Arc::new(
        PostgresRepository::connect(
            &PostgresSettings::new(cluster.url()).connect_timeout(Duration::from_secs(2)),
        )
        .await
        .expect("connect to the test's own server"),
    );
    repo.upsert_community(&Community::new(
        owner_access::domain::CommunityId::new("c1").unwrap(),
        "Maple Grove HOA",
    ))
    .await
    .unwrap();
    let owners: Vec<_> = (0..OWNERS)
        .map(|i| owner(&format!("r{i:03}"), Some(&format!("r{i:03}@example.org"))))
        .collect();
    repo.upsert_owners(&owners, common::t0()).await.unwrap();

    // About 2 messages every 8 ms: 300 owners take more than a second, the restart
    // (a fast shutdown and a start) a good part of one.
    let server = TestServer::plain();
    server.shared.delay_ms.store(8, Ordering::SeqCst);
    let smtp = Arc::new(SmtpTransport::new(server.settings(Security::Plain)).unwrap());
    let options = SendOptions {
        concurrency: 2,
        outcome_group: 4,
        // The stopped run's claims cannot be released while the server is down; a
        // short lease lets the resume take them over soon.
        claim_lease: Duration::from_secs(2),
        ..common::fast_options()
    };
    let service = OwnerAccess::builder(repo.clone(), smtp.clone())
        .sender("Owner Portal <no-reply@portal.example.com>")
        .portal_url(PORTAL)
        .send_options(options)
        .build()
        .unwrap();
    let selection: Selection = owners.iter().map(|o| o.id.clone()).collect();
    let review = service
        .review(
            &service
                .compose(&owners[0].community, &selection)
                .await
                .unwrap(),
        )
        .await
        .unwrap();

    // The restart, once a third of the owners were accepted.
    let shared = server.shared.clone();
    let restarter = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while shared.received.lock().unwrap().len() < OWNERS / 3 {
                assert!(
                    Instant::now() < deadline,
                    "the send never got a third through"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            let at = shared.received.lock().unwrap().len();
            let out = cluster.pg_ctl(&["-m", "fast", "restart"]);
            assert!(
                out.status.success(),
                "pg_ctl restart: {}\n{}",
                text(&out),
                cluster.log()
            );
            at
        })
    };
    let report = service.send(review).await.expect("a stop, not an error");
    let restarted_at = restarter.await.expect("the restart");
    let batch = report.batch.clone().expect("the report names the batch");
    match &report.stopped {
        Some(StopReason::StoreUnavailable { error, .. }) => assert!(
            error.contains("is unavailable"),
            "the store is named unavailable: {error}"
        ),
        other => panic!(
            "expected a store stop (restart after {restarted_at} messages), got {other:?}: \
             {report:?}"
        ),
    }
    assert!(
        report.pending > 0 && report.sent < OWNERS,
        "stopped with deliveries pending: {report:?}"
    );
    let before = copies(&server);
    assert!(
        before.values().all(|ids| ids.len() == 1),
        "nobody twice before the resume"
    );
    assert_eq!(before.len(), report.sent, "the report counts what went out");

    // The server is back; the same repository and pool, all of whose connections the
    // restart ended, serve the resume.
    let resumed = service.resume(&batch).await.expect("the resume runs");
    assert!(resumed.is_complete(), "{resumed:?}");
    let counts = repo.delivery_counts(&batch).await.unwrap();
    assert_eq!(
        (counts.sent, counts.pending, counts.claimed, counts.failed),
        (OWNERS, 0, 0, 0),
        "every delivery recorded sent once: {counts:?}"
    );
    let after = copies(&server);
    assert_eq!(after.len(), OWNERS, "nobody lost");
    let twice: Vec<_> = after.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.len() <= report.unrecorded,
        "second copies only of the {} messages whose outcome the store did not take: {twice:?}",
        report.unrecorded
    );
    for (to, ids) in &twice {
        assert_eq!(ids.len(), 2, "{to} got {} copies", ids.len());
        assert_eq!(ids[0], ids[1], "{to}'s copies share a Message-ID");
        assert!(
            before.contains_key(*to),
            "{to}'s first copy went out before the stop"
        );
    }
    eprintln!(
        "restart after {restarted_at} of {OWNERS} accepted; the stopped run sent {} \
         ({} unrecorded), pending {}; after the resume: sent {}; second copies {}",
        report.sent,
        report.unrecorded,
        report.pending,
        resumed.sent,
        twice.len()
    );
    smtp.close().await.unwrap();
}
