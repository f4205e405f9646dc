//! Tidy after a crash: a send to an outbox killed with SIGKILL leaves temporary files
//! (messages half written); the next command that opens that outbox removes them.
#![cfg(all(unix, feature = "smtp", feature = "sqlite"))]

mod cli_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::*;

fn temps(s: &Session, dir: &str) -> Vec<String> {
    std::fs::read_dir(s.path(dir))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn temporary_files_of_a_killed_outbox_send_are_removed_on_reopening() {
    let s = Session::new();
    let mut owners = String::from(
        "owner_id,community_id,property_id,first_name,last_name,property_address,primary_email,registered\n",
    );
    for i in 0..40 {
        owners.push_str(&format!(
            "p{i},maple,u{i},N{i},L{i},{i} Oak,p{i}@example.org,false\n"
        ));
    }
    s.write("owners.csv", &owners);
    s.ok(&[
        "import",
        "--communities",
        "communities.csv",
        "--owners",
        "owners.csv",
    ]);
    // A large attachment: each message is written and flushed for a while, so a kill
    // lands while some are half written.
    let pdf: Vec<u8> = (0..2_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(s.path("letter.pdf"), pdf).unwrap();
    let mut left = Vec::new();
    for attempt in 0..5 {
        let out = format!("out{attempt}");
        let mut child = Command::new(binary())
            .arg("--db")
            .arg(s.path("state.db"))
            .args([
                "send",
                "--community",
                "maple",
                "--outbox",
                &out,
                "--attach",
                "letter.pdf",
                "--concurrency",
                "16",
            ])
            .current_dir(s.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while temps(&s, &out).is_empty()
            && child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        left = temps(&s, &out);
        if left.is_empty() {
            continue;
        }
        // Reopen the outbox: `resume` of the batch the killed process stored.
        let conn = rusqlite::Connection::open(s.path("state.db")).unwrap();
        let batch: String = conn
            .query_row(
                "SELECT id FROM batches ORDER BY created_at DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        drop(conn);
        let resumed = s.run(&["resume", "--batch", &batch, "--outbox", &out]);
        assert!(
            matches!(resumed.status.code(), Some(0 | 3)),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert_eq!(
            temps(&s, &out),
            Vec::<String>::new(),
            "the killed send left {left:?}"
        );
        return;
    }
    panic!("five killed sends left no temporary file to tidy (last: {left:?})");
}
