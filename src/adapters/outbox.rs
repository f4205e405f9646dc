//! `FileOutbox`: a transport that writes one `.eml` file per message into a folder, for
//! demos, for review by a person, and for hosts that hand files to another mailer.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::transport::{Accepted, Envelope, MailTransport, TransportError};

/// Writes each message to `<dir>/<batch>__<owner>.eml` (the recap: `<batch>__summary.eml`;
/// an untagged message: `untagged-<n>-<hash>.eml`).
///
/// Like a delivery agent storing mail, it records the envelope in two trace fields put
/// before the message, `Return-Path: <sender>` and `Delivered-To: <recipient>`;
/// [`FileOutbox::messages`] reads them back.
///
/// Each file is written to a temporary name, flushed to disk and renamed into place, so
/// a reader never sees half a message. Resending the same message (same batch and
/// owner, so the same Message-ID) replaces the file: the outbox holds each owner's
/// message once.
#[derive(Debug, Clone)]
pub struct FileOutbox {
    dir: PathBuf,
    counter: std::sync::Arc<AtomicU64>,
}

impl FileOutbox {
    /// An outbox in `dir`, created (with its parents) if missing.
    ///
    /// Opening tidies after a crash: the outbox's own temporary files
    /// (`.<name>.eml.<pid>.<n>.tmp`, what a message is written to before it is
    /// renamed into place) that are stale are removed. One is stale when the process
    /// that wrote it (the pid in its name) no longer runs on this machine (where
    /// `/proc` shows that), or when it was last written more than
    /// [`STALE_TEMP_AGE`] ago. Any other file is left alone.
    ///
    /// # Errors
    /// When the folder cannot be created or listed.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        remove_stale_temps(&dir)?;
        Ok(Self {
            dir,
            counter: Default::default(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every message in the outbox, with the envelope it was sent with, in file-name
    /// order. Files that are not outbox messages (no trace fields) are skipped.
    ///
    /// # Errors
    /// When the folder or a file cannot be read.
    pub fn messages(&self) -> std::io::Result<Vec<(Envelope, Vec<u8>)>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        paths.sort();
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let bytes = std::fs::read(&path)?;
            if let Some(found) = split_trace(&bytes) {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// The file a message with this envelope is written to.
    pub fn path_for(&self, envelope: &Envelope, message: &[u8]) -> PathBuf {
        let name = match &envelope.tag {
            Some(tag) => {
                let owner = tag
                    .owner
                    .as_ref()
                    .map_or_else(|| "summary".to_owned(), |o| file_safe(o.as_str()));
                format!("{}__{owner}.eml", file_safe(tag.batch.as_str()))
            }
            None => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                let hash = Sha256::digest(message);
                let short: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
                format!("untagged-{n}-{short}.eml")
            }
        };
        self.dir.join(name)
    }
}

/// Keeps `[A-Za-z0-9._-]`; anything else becomes `_`, and then a short hash of the
/// original is appended so two different ids never share a file name.
fn file_safe(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned == id && !id.starts_with('.') {
        return cleaned;
    }
    let hash = Sha256::digest(id.as_bytes());
    let short: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{short}", cleaned.trim_start_matches('.'))
}

fn trace_fields(envelope: &Envelope) -> String {
    format!(
        "Return-Path: <{}>\r\nDelivered-To: {}\r\n",
        envelope.from.smtp_form(),
        envelope.to.smtp_form()
    )
}

/// Splits a stored file into its envelope (from the trace fields) and the message.
fn split_trace(stored: &[u8]) -> Option<(Envelope, Vec<u8>)> {
    let mut lines = stored.splitn(3, |b| *b == b'\n');
    let first = std::str::from_utf8(lines.next()?)
        .ok()?
        .trim_end_matches('\r');
    let second = std::str::from_utf8(lines.next()?)
        .ok()?
        .trim_end_matches('\r');
    let from = first.strip_prefix("Return-Path: <")?.strip_suffix('>')?;
    let to = second.strip_prefix("Delivered-To: ")?;
    let envelope = Envelope::new(from.parse().ok()?, to.parse().ok()?);
    Some((envelope, lines.next().unwrap_or_default().to_vec()))
}

fn write_atomically(path: &Path, trace: &[u8], bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(trace)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp.0);
    })
}

/// How long an outbox temporary file may go unwritten before another outbox opening
/// the folder takes it for a crash's leftover, whoever wrote it: writing one message
/// takes milliseconds.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// The pid in an outbox temporary file's name (`.<name>.eml.<pid>.<n>.tmp`), or `None`
/// for any other name.
fn temp_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = rest.rsplitn(3, '.');
    let n = parts.next()?;
    let pid = parts.next()?;
    let target = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(n) || !target.ends_with(".eml") || target.len() <= ".eml".len() {
        return None;
    }
    pid.parse().ok().filter(|_| digits(pid))
}

/// Whether process `pid` runs on this machine; `None` where that cannot be told.
fn is_running(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

/// Removes the outbox's stale temporary files from `dir` (see [`FileOutbox::new`]).
fn remove_stale_temps(dir: &Path) -> std::io::Result<()> {
    let own = std::process::id();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_writer) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        let orphan = pid != own && is_running(pid) == Some(false);
        if old || orphan {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

fn tempfile_in(dir: &Path, target: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static N: AtomicU64 = AtomicU64::new(0);
    let stem = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{stem}.{}.{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

impl fmt::Display for FileOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file outbox at {}", self.dir.display())
    }
}

#[async_trait]
impl MailTransport for FileOutbox {
    /// Writes the message. A missing folder, a full disk or a permission problem is
    /// fatal: no other message would fare better.
    async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Accepted, TransportError> {
        let path = self.path_for(envelope, message);
        let bytes = message.to_vec();
        let trace = trace_fields(envelope);
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&target, trace.as_bytes(), &bytes))
            .await
            .map_err(|e| TransportError::transient(format!("the writer task failed: {e}")))?
            .map_err(|e| {
                TransportError::fatal(format!("cannot write {}: {e}", path.display()))
                    .with_source(e)
            })?;
        Ok(Accepted {
            response: Some(path.display().to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BatchId, EmailAddress, OwnerId};
    use crate::transport::DeliveryTag;

    fn envelope(owner: Option<&str>) -> Envelope {
        Envelope::new(
            EmailAddress::parse("from@example.org").unwrap(),
            EmailAddress::parse("to@example.org").unwrap(),
        )
        .with_tag(DeliveryTag {
            batch: BatchId::new("b-1").unwrap(),
            owner: owner.map(|o| OwnerId::new(o).unwrap()),
            message_id: "m@x".into(),
        })
    }

    #[tokio::test]
    async fn writes_one_file_per_owner_and_replaces_on_resend() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = FileOutbox::new(dir.path().join("out")).unwrap();
        outbox.send(&envelope(Some("o-1")), b"first").await.unwrap();
        outbox
            .send(&envelope(Some("o-1")), b"second")
            .await
            .unwrap();
        outbox
            .send(&envelope(Some("../evil/x")), b"third")
            .await
            .unwrap();
        outbox.send(&envelope(None), b"recap").await.unwrap();
        let mut names: Vec<String> = std::fs::read_dir(outbox.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"b-1__o-1.eml".to_owned()));
        assert!(names.contains(&"b-1__summary.eml".to_owned()));
        assert!(
            names
                .iter()
                .all(|n| !n.contains('/') && !n.starts_with('.'))
        );
        let body = std::fs::read(outbox.dir().join("b-1__o-1.eml")).unwrap();
        assert_eq!(
            body,
            b"Return-Path: <from@example.org>\r\nDelivered-To: to@example.org\r\nsecond"
        );
        let read_back = outbox.messages().unwrap();
        assert_eq!(read_back.len(), 3);
        assert!(read_back.iter().any(|(env, bytes)| bytes == b"second"
            && env.from.as_str() == "from@example.org"
            && env.to.as_str() == "to@example.org"));
    }

    #[tokio::test]
    async fn an_unwritable_folder_is_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = FileOutbox::new(dir.path().join("out")).unwrap();
        std::fs::remove_dir(outbox.dir()).unwrap();
        std::fs::write(outbox.dir(), b"a file where the folder was").unwrap();
        let err = outbox.send(&envelope(Some("o")), b"x").await.unwrap_err();
        assert!(err.is_fatal(), "{err:?}");
    }

    #[test]
    fn only_the_outbox_own_temporary_names_are_recognised() {
        assert_eq!(temp_writer(".b-1__o-1.eml.4242.7.tmp"), Some(4242));
        for other in [
            "b-1__o-1.eml",
            ".b-1__o-1.eml.4242.7",
            "b-1__o-1.eml.4242.7.tmp",
            ".b-1__o-1.txt.4242.7.tmp",
            ".eml.4242.7.tmp",
            ".b.eml.42x.7.tmp",
            ".b.eml.42.x.tmp",
            ".b.eml..7.tmp",
            ".notes.tmp",
        ] {
            assert_eq!(temp_writer(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn opening_removes_stale_temporary_files_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        // A pid that runs no process (above Linux's largest pid_max).
        let dead = ".b-1__o-1.eml.4294967295.0.tmp";
        let live_old = format!(".b-1__o-2.eml.{}.0.tmp", std::process::id());
        let live_new = format!(".b-1__o-3.eml.{}.1.tmp", std::process::id());
        let keep = [
            "b-1__o-1.eml",
            ".notes.tmp",
            "draft.eml.tmp",
            ".x.txt.1.2.tmp",
        ];
        for name in [dead, &live_old, &live_new].into_iter().chain(keep) {
            std::fs::write(path(name), b"x").unwrap();
        }
        let old = std::time::SystemTime::now() - STALE_TEMP_AGE - std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(path(&live_old))
            .unwrap()
            .set_modified(old)
            .unwrap();
        FileOutbox::new(dir.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        if !Path::new("/proc/self").exists() {
            want.push(dead.to_owned()); // no way to tell the writer is gone
        }
        want.push(live_new);
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn distinct_ids_never_share_a_name() {
        assert_ne!(file_safe("a/b"), file_safe("a_b"));
        assert_eq!(file_safe("plain-id_1.x"), "plain-id_1.x");
    }
}
