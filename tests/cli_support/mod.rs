//! Running the `owner_access` example from tests: building it, a session with its own
//! SQLite file and CSV files in a temporary folder, reading links out of messages.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use owner_access::token::token_from_link;
use serde_json::Value;

/// Builds the example once (a no-op when `cargo test` already built it) and returns
/// its path.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--example",
                "owner_access",
                "--all-features",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the example failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        target.join("debug").join("examples").join("owner_access")
    })
}

pub struct Session {
    pub dir: tempfile::TempDir,
}

impl Session {
    pub fn new() -> Self {
        let s = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        s.write(
            "communities.csv",
            "community_id,name,reply_to\nmaple,Maple Grove HOA,board@maple.example.org\n",
        );
        s.write(
            "owners.csv",
            "\u{feff}owner_id,community_id,property_id,first_name,last_name,property_address,primary_email,registered,notes\n\
             o1,maple,u1,Ann,Lee,1 Elm St,ann@example.org,false,x\n\
             o2,maple,u2,Bo,Ng,2 Elm St,bo@example.org,no,\n\
             o3,maple,u3,Cy,Roe,3 Elm St,,0,\n\
             o4,maple,u4,Di,Fox,4 Elm St,not-an-address,FALSE,\n\
             o5,maple,u5,Ed,Kim,5 Elm St,family@example.org,false,\n\
             o6,maple,u6,Flo,Kim,6 Elm St,Family@Example.org ,false,\n\
             o7,maple,u7,Gus,Yu,7 Elm St,gus@example.org,yes,\n",
        );
        s
    }

    /// A session whose community `maple` has `n` eligible owners, imported: owner
    /// `a<i>` of property `u<i>` at `a<i>@example.org`, `i` written with `width`
    /// digits (`a007` for 3).
    pub fn community_of(n: usize, width: usize) -> Self {
        let s = Self::new();
        let mut csv = String::from(
            "community_id,owner_id,property_id,first_name,last_name,property_address,primary_email,registered\n",
        );
        for i in 0..n {
            csv.push_str(&format!(
                "maple,a{i:0width$},u{i:0width$},Ann,Lee{i},{i} Elm St,a{i:0width$}@example.org,false\n"
            ));
        }
        s.write("owners.csv", &csv);
        s.imported()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.path(name), content).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let db = self.path("state.db");
        Command::new(binary())
            .arg("--db")
            .arg(&db)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("the example runs")
    }

    /// The command for the example with these arguments, on the session's file and
    /// folder, stdin closed, stdout and stderr captured.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("--db")
            .arg(self.path("state.db"))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the example in the background (see [`Session::command`]).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("the example starts")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.run(args);
        let code = out.status.code().unwrap_or(-1);
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (code, value)
    }

    pub fn imported(self) -> Self {
        self.ok(&[
            "import",
            "--communities",
            "communities.csv",
            "--owners",
            "owners.csv",
        ]);
        self
    }

    pub fn outbox_files(&self, dir: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path(dir))
            .map(|rd| {
                rd.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// The token in a message file's text part.
pub fn token_in(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let parsed = mailparse::parse_mail(&bytes).unwrap();
    let mut stack = vec![parsed];
    while let Some(part) = stack.pop() {
        if part.ctype.mimetype == "text/plain" {
            let text = part.get_body().unwrap();
            return token_from_link(&text)
                .expect("a registration link")
                .to_owned();
        }
        stack.extend(part.subparts);
    }
    panic!("no text part in {}", path.display());
}

pub fn reasons(value: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = value["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["owner_id"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A finished process's stdout as JSON, or a panic showing both outputs.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A finished process's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends the signal `name` (`INT`, `TERM`, `STOP`, ...) to a child, with `kill`.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Polls `done` every `every` until it holds (`true`) or `limit` has passed (`false`).
pub fn wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
