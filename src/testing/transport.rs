//! The transport checks: a transport and the [`Sink`] that reads what arrived.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;

use crate::adapters::memory::InMemoryTransport;
use crate::transport::{Envelope, MailTransport};

use super::fixtures::*;
use super::harness::*;

/// Where a transport's messages can be read back: the in-memory transport itself, a
/// mail server's received mail, an outbox directory.
///
/// The suite gives each message a recipient of its own and polls [`received`](Self::received)
/// (for up to [`ARRIVAL_TIMEOUT`]) until what it sent has arrived, so a sink may
/// return everything it ever received, and mail may arrive a little after `send`
/// returned.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Every message received so far: the envelope and the bytes as stored.
    async fn received(&self) -> Vec<(Envelope, Vec<u8>)>;
}

#[async_trait]
impl<F> Sink for F
where
    F: Fn() -> Vec<(Envelope, Vec<u8>)> + Send + Sync,
{
    async fn received(&self) -> Vec<(Envelope, Vec<u8>)> {
        self()
    }
}

#[async_trait]
impl Sink for InMemoryTransport {
    async fn received(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.messages()
            .into_iter()
            .map(|m| (m.envelope, m.bytes))
            .collect()
    }
}

/// How long the transport suite waits for sent mail to show up in the [`Sink`].
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `received` is the message `sent`, byte for byte.
///
/// The suite only sends messages with CRLF line endings that end in CRLF, so a
/// transport that normalises bare LF to CRLF passes. A receiving server may prepend
/// trace header fields (`Received:`, `Return-Path:`): they are allowed before the
/// message's first byte, and nothing else is. Dot-stuffing must be undone exactly.
pub fn same_message(sent: &[u8], received: &[u8]) -> bool {
    if received == sent {
        return true;
    }
    let Some(prefix) = received
        .strip_suffix(sent)
        .and_then(|p| std::str::from_utf8(p).ok())
    else {
        return false;
    };
    prefix.ends_with("\r\n")
        && !prefix.contains("\r\n\r\n")
        && prefix.split("\r\n").filter(|l| !l.is_empty()).all(|line| {
            line.starts_with([' ', '\t'])
                || line.split_once(':').is_some_and(|(name, _)| {
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                })
        })
}

fn nonce() -> String {
    let mut bytes = [0u8; 6];
    // Only makes recipients unique across runs sharing a sink; a fixed value would do
    // for a fresh sink, so a failing random source is not an error.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Outgoing {
    envelope: Envelope,
    bytes: Vec<u8>,
}

fn outgoing(check: &str, run: &str, n: usize, body: &str) -> Outgoing {
    let to = addr(&format!("{check}-{run}-{n}@conformance.example.org"));
    let from = addr("sender@conformance.example.org");
    let mut bytes = format!(
        "From: Conformance <{from}>\r\nTo: <{to}>\r\nSubject: {check} {n}\r\n\
         Message-ID: <{check}.{run}.{n}@conformance.example.org>\r\n\
         Date: Thu, 26 Nov 2026 14:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    )
    .into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    Outgoing {
        envelope: Envelope::new(from, to),
        bytes,
    }
}

/// Waits until each message has arrived at least once, then checks each arrived
/// exactly once, byte for byte, with its envelope.
async fn check_arrived(c: Ctx, sink: &dyn Sink, sent: &[Outgoing]) -> CheckResult {
    let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let received = sink.received().await;
        let copies = |o: &Outgoing| {
            received
                .iter()
                .filter(|(env, _)| env.to == o.envelope.to)
                .collect::<Vec<_>>()
        };
        let all_there = sent.iter().all(|o| !copies(o).is_empty());
        if all_there || tokio::time::Instant::now() >= deadline {
            for o in sent {
                let got = copies(o);
                c.ensure(got.len() == 1, || {
                    format!(
                        "the message to {} arrived {} times (waited up to {ARRIVAL_TIMEOUT:?})",
                        o.envelope.to,
                        got.len()
                    )
                })?;
                let (envelope, bytes) = got[0];
                c.eq(&envelope.from, &o.envelope.from, "envelope sender")?;
                c.ensure(same_message(&o.bytes, bytes), || {
                    let at = o
                        .bytes
                        .iter()
                        .zip(bytes.iter())
                        .position(|(a, b)| a != b)
                        .unwrap_or(o.bytes.len().min(bytes.len()));
                    format!(
                        "the message to {} arrived altered: {} bytes sent, {} received, \
                         first difference at byte {at}",
                        o.envelope.to,
                        o.bytes.len(),
                        bytes.len()
                    )
                })?;
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn send_all(c: Ctx, transport: &dyn MailTransport, messages: &[Outgoing]) -> CheckResult {
    let results = join_all(
        messages
            .iter()
            .map(|m| transport.send(&m.envelope, &m.bytes)),
    )
    .await;
    for (m, r) in messages.iter().zip(results) {
        r.map_err(|e| c.fail(format!("sending to {}: {e}", m.envelope.to)))?;
    }
    Ok(())
}

/// One message arrives once, with its envelope, byte for byte.
pub async fn transport_delivers_once(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_delivers_once");
    let m = [outgoing(
        "once",
        &nonce(),
        0,
        "Hello Ann,\r\n\r\nWelcome.\r\n",
    )];
    send_all(c, transport, &m).await?;
    check_arrived(c, sink, &m).await
}

/// Lines starting with `.` (a lone `.` included, which ends SMTP DATA unless
/// stuffed), trailing white space and long lines survive.
pub async fn transport_preserves_bytes(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_preserves_bytes");
    let long = "x".repeat(990);
    let body = format!(
        "first line\r\n.\r\n..two dots\r\n.leading dot\r\n. dot space\r\n\
         trailing space  \r\n\ttab first\r\n\r\n\r\n{long}\r\n.\r\nlast line\r\n"
    );
    let m = [outgoing("bytes", &nonce(), 0, &body)];
    send_all(c, transport, &m).await?;
    check_arrived(c, sink, &m).await
}

/// 50 concurrent sends: every message arrives exactly once.
pub async fn transport_concurrent_sends(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_concurrent_sends");
    let run = nonce();
    let messages: Vec<Outgoing> = (0..50)
        .map(|n| outgoing("concurrent", &run, n, &format!("Message {n} of 50.\r\n")))
        .collect();
    send_all(c, transport, &messages).await?;
    check_arrived(c, sink, &messages).await
}

/// A 2 MB message arrives intact.
pub async fn transport_large_message(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_large_message");
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut body = String::with_capacity(2 * 1024 * 1024 + 100);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut line = 0usize;
    while body.len() < 2 * 1024 * 1024 {
        if line % 1000 == 999 {
            body.push('.');
        }
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.push(ALPHABET[(x % 64) as usize] as char);
        }
        body.push_str("\r\n");
        line += 1;
    }
    let m = [outgoing("large", &nonce(), 0, &body)];
    send_all(c, transport, &m).await?;
    check_arrived(c, sink, &m).await
}

/// `close`, then sending again, works.
pub async fn transport_send_after_close(
    transport: &dyn MailTransport,
    sink: &dyn Sink,
) -> CheckResult {
    let c = Ctx("transport_send_after_close");
    let run = nonce();
    let first = [outgoing("reopen", &run, 0, "before close\r\n")];
    send_all(c, transport, &first).await?;
    transport
        .close()
        .await
        .map_err(|e| c.fail(format!("close: {e}")))?;
    let second = [outgoing("reopen", &run, 1, "after close\r\n")];
    send_all(c, transport, &second).await?;
    check_arrived(c, sink, &first).await?;
    check_arrived(c, sink, &second).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_message_allows_only_trace_headers_before() {
        let sent = b"Subject: x\r\n\r\nbody\r\n";
        assert!(same_message(sent, sent));
        let traced = b"Received: from a by b;\r\n  Thu, 26 Nov 2026\r\nReturn-Path: <a@b.org>\r\nSubject: x\r\n\r\nbody\r\n";
        assert!(same_message(sent, traced));
        assert!(!same_message(sent, b"Subject: x\r\n\r\nbody"));
        assert!(!same_message(
            sent,
            b"junk\r\n\r\nSubject: x\r\n\r\nbody\r\n"
        ));
        assert!(!same_message(sent, b"Subject: x\r\n\r\n.body\r\n"));
    }
}
