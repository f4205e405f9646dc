//! Real failing file systems for tests: a tiny tmpfs that fills up, and a way to run a
//! command without root's power to write read-only files.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Whether a missing capability must fail the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether this process is root (files it creates belong to uid 0).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}

/// A tmpfs of a few hundred KB mounted on a temporary folder, unmounted on drop:
/// writes into it fail with ENOSPC once it is full, as on a full disk.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one of `kb` KB. Needs root (CAP_SYS_ADMIN); without it, `None` and a
    /// "skipped" line, or a panic under `CI=true`.
    pub fn mount(kb: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kb}k,mode=0777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(SmallDisk { dir });
        }
        let why = "a full disk is a small tmpfs, and mounting one needs root";
        assert!(!required(), "{why}, and CI=true requires this test to run");
        eprintln!("skipped: {why}");
        None
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
