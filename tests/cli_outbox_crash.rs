//! Tidy after a crash: a send to an outbox killed with SIGKILL leaves temporary files
//! (messages half written, `.<batch>__<owner>.eml.<pid>.<n>.tmp`); the next command
//! that opens that outbox removes them, and the resumed batch leaves none either.
#![cfg(all(unix, feature = "smtp", feature = "sqlite"))]

mod cli_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use cli_support::*;

/// The temporary files in the outbox folder `dir`.
fn temps(s: &Session, dir: &str) -> Vec<String> {
    std::fs::read_dir(s.path(dir))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// The batch id a temporary file was written for: the name is
/// `.<batch>__<owner>.eml.<pid>.<n>.tmp`.
fn batch_of(temp: &str) -> String {
    let name = temp
        .strip_prefix('.')
        .expect("a temporary file starts with a dot");
    let (batch, _) = name.split_once("__").expect("batch__owner");
    batch.to_owned()
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
    let s = s.imported();
    // A large attachment: each message is written and flushed for a while, so a kill
    // lands while some are half written.
    let pdf: Vec<u8> = (0..2_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(s.path("letter.pdf"), pdf).unwrap();
    let mut left = Vec::new();
    for attempt in 0..5 {
        let out = format!("out{attempt}");
        let mut child = s
            .command(&[
                "send",
                "--community",
                "maple",
                "--outbox",
                &out,
                "--attach",
                "letter.pdf",
                "--concurrency",
                "16",
                "--lease",
                "3",
            ])
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
        let Some(first) = left.first() else {
            continue;
        };
        // Reopen the outbox: `resume` of the batch the killed process stored. It waits
        // for the dead sender's leases (3 s at most), then finishes.
        let batch = batch_of(first);
        let resumed = s.run(&["resume", "--batch", &batch, "--outbox", &out]);
        assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
        assert_eq!(
            temps(&s, &out),
            Vec::<String>::new(),
            "the killed send left {left:?}"
        );
        // Every owner's message is there, whole: 40 .eml files, none of them empty.
        let files = s.outbox_files(&out);
        assert_eq!(files.len(), 40, "{files:?}");
        for file in &files {
            let len = std::fs::metadata(file).unwrap().len();
            assert!(len > 2_000_000, "{} is {len} bytes", file.display());
        }
        return;
    }
    panic!("five killed sends left no temporary file to tidy (last: {left:?})");
}
