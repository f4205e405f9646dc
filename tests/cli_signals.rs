//! SIGTERM and SIGINT stop the `owner_access` example at once, even while it waits for
//! a slot under a slow rate: the process exits 3 within a second, reports the stop,
//! and sends nothing after it (with `--rate 0.5`, SIGTERM took 15 s and eight more
//! messages went out; with a rate of one an hour it was ignored for minutes).
#![cfg(all(feature = "smtp", feature = "sqlite", unix))]

mod cli_support;

use std::time::{Duration, Instant};

use cli_support::*;

#[test]
fn a_signal_during_a_rate_wait_ends_the_send_within_a_second() {
    const OWNERS: usize = 20;
    for (signal, rate) in [("TERM", "0.5"), ("INT", "0.0003")] {
        let s = Session::community_of(OWNERS, 2);
        let child = s.spawn(&[
            "send",
            "--community",
            "maple",
            "--outbox",
            "out",
            "--rate",
            rate,
            "--json",
        ]);
        assert!(
            wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
                !s.outbox_files("out").is_empty()
            }),
            "the first message never came"
        );
        // The other workers now wait for their slots.
        std::thread::sleep(Duration::from_millis(300));
        let signalled = Instant::now();
        cli_support::signal(&child, signal);
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
