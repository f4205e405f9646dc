//! SIGTERM and SIGINT stop the `owner_access` example at once, even while it waits for
//! a slot under a slow rate: the process exits 3 within a second, reports the stop,
//! and sends nothing after it (with `--rate 0.5`, SIGTERM took 15 s and eight more
//! messages went out; with a rate of one an hour it was ignored for minutes).
#![cfg(all(feature = "smtp", feature = "sqlite", unix))]

mod cli_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::*;

fn community_of(n: usize) -> Session {
    let s = Session::new();
    let mut csv = String::from(
        "community_id,owner_id,property_id,first_name,last_name,property_address,primary_email,registered\n",
    );
    for i in 0..n {
        csv.push_str(&format!(
            "maple,a{i:02},u{i:02},Ann,Lee{i},{i} Elm St,a{i:02}@example.org,false\n"
        ));
    }
    s.write("owners.csv", &csv);
    s.imported()
}

#[test]
fn a_signal_during_a_rate_wait_ends_the_send_within_a_second() {
    const OWNERS: usize = 20;
    for (signal, rate) in [("TERM", "0.5"), ("INT", "0.0003")] {
        let s = community_of(OWNERS);
        let child = Command::new(binary())
            .arg("--db")
            .arg(s.path("state.db"))
            .args([
                "send",
                "--community",
                "maple",
                "--outbox",
                "out",
                "--rate",
                rate,
                "--json",
            ])
            .current_dir(s.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.outbox_files("out").is_empty() {
            assert!(Instant::now() < deadline, "the first message never came");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The other workers now wait for their slots.
        std::thread::sleep(Duration::from_millis(300));
        let signalled = Instant::now();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let took = signalled.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(took < Duration::from_secs(1), "SIG{signal} took {took:?}");
        assert_eq!(out.status.code(), Some(3), "SIG{signal}: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["stop"], "cancelled", "{report}");
        let files = s.outbox_files("out").len();
        assert_eq!(
            files, 1,
            "SIG{signal}: nothing went out after the first message"
        );
        assert_eq!(report["sent"], 1, "{report}");
        assert_eq!(report["pending"], OWNERS - 1, "{report}");
        eprintln!("SIG{signal} at --rate {rate}: exited 3 after {took:?}");
    }
}
