//! [`InMemoryTransport`]: records every accepted message, counts attempts and sends
//! in flight; the faults it injects are in `faults`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::faults::{Fault, FractionRule, Rule};
use crate::domain::EmailAddress;
use crate::transport::{Accepted, Envelope, MailTransport, TransportError};

/// A message [`InMemoryTransport`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMessage {
    /// The envelope it was sent with.
    pub envelope: Envelope,
    /// The bytes, exactly as given.
    pub bytes: Vec<u8>,
}

impl RecordedMessage {
    /// The value of the `Message-ID` header (angle brackets included, folding
    /// undone), if the message has one.
    pub fn message_id(&self) -> Option<String> {
        header_value(&self.bytes, "message-id")
    }
}

/// The first value of a header field in a message's header section.
fn header_value(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut found: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(value) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                value.push_str(line);
                continue;
            }
            break;
        }
        if let Some((field, value)) = line.split_once(':')
            && field.trim().eq_ignore_ascii_case(name)
        {
            found = Some(value.to_owned());
        }
    }
    found.map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[derive(Debug, Default)]
pub(super) struct TransportState {
    pub(super) messages: Vec<RecordedMessage>,
    pub(super) by_address: HashMap<String, Rule>,
    pub(super) all: Option<Rule>,
    pub(super) fraction: Option<FractionRule>,
    pub(super) attempts_by_address: HashMap<String, u32>,
    pub(super) attempts: u64,
}

/// A [`MailTransport`] that keeps every accepted message in memory, for tests and
/// demos.
///
/// It records each accepted message (envelope and bytes), counts attempts, tracks the
/// most sends seen in flight at once (with an optional per-send latency so
/// concurrency shows), and injects faults:
///
/// - for one address, always or for the next N attempts ([`fail_address`](Self::fail_address),
///   [`fail_address_times`](Self::fail_address_times));
/// - for every send ([`fail_all`](Self::fail_all), [`fail_all_times`](Self::fail_all_times));
/// - for a fraction of sends chosen deterministically from a seed
///   ([`fail_fraction`](Self::fail_fraction));
///
/// An address rule wins over an every-send rule, which wins over the fraction.
/// [`Fault::LostReply`] records the message and still reports an error.
///
/// ```
/// use owner_access::{InMemoryTransport, MailTransport};
/// use owner_access::adapters::memory::Fault;
/// use owner_access::domain::EmailAddress;
/// use owner_access::transport::Envelope;
///
/// # tokio_test_block_on(async {
/// let transport = InMemoryTransport::new();
/// let to: EmailAddress = "ann@example.org".parse().unwrap();
/// let envelope = Envelope::new("hoa@example.org".parse().unwrap(), to.clone());
/// transport.fail_address_times(&to, Fault::Transient, 1);
/// assert!(transport.send(&envelope, b"Subject: hi\r\n\r\nhello\r\n").await.unwrap_err().is_transient());
/// assert!(transport.send(&envelope, b"Subject: hi\r\n\r\nhello\r\n").await.is_ok());
/// assert_eq!(transport.messages_to(&to).len(), 1);
/// # });
/// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct InMemoryTransport {
    state: Mutex<TransportState>,
    latency: Option<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts a send in flight for as long as it lives (also when the send is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InMemoryTransport {
    /// A transport that accepts everything at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every send wait this long (tokio's timer) before it completes, so
    /// concurrent sends overlap and [`max_in_flight`](Self::max_in_flight) shows them.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, TransportState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every accepted message, in the order accepted.
    pub fn messages(&self) -> Vec<RecordedMessage> {
        self.lock().messages.clone()
    }

    /// The accepted messages whose envelope recipient is `to` (compared by `delivered_key`).
    pub fn messages_to(&self, to: &EmailAddress) -> Vec<RecordedMessage> {
        self.lock()
            .messages
            .iter()
            .filter(|m| &m.envelope.to == to)
            .cloned()
            .collect()
    }

    /// How many messages were accepted.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Whether no message was accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the recorded messages (faults and counters stay).
    pub fn clear(&self) {
        self.lock().messages.clear();
    }

    /// How many times `send` was called, successful or not.
    pub fn attempts(&self) -> u64 {
        self.lock().attempts
    }

    /// How many times `send` was called for this recipient.
    pub fn attempts_to(&self, to: &EmailAddress) -> u32 {
        self.lock()
            .attempts_by_address
            .get(to.normalized())
            .copied()
            .unwrap_or(0)
    }

    /// The most sends that were in flight at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

impl fmt::Display for InMemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("in-memory transport")
    }
}

#[async_trait]
impl MailTransport for InMemoryTransport {
    async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Accepted, TransportError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(latency) = self.latency {
            tokio::time::sleep(latency).await;
        }
        let mut state = self.lock();
        let fault = Self::attempt(&mut state, envelope.to.normalized());
        match fault {
            Some(Fault::LostReply) | None => {
                state.messages.push(RecordedMessage {
                    envelope: envelope.clone(),
                    bytes: message.to_vec(),
                });
                match fault {
                    Some(f) => Err(f.error()),
                    None => Ok(Accepted {
                        response: Some(format!("250 2.0.0 queued as {}", state.messages.len())),
                    }),
                }
            }
            Some(f) => Err(f.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::transport::ErrorClass;

    fn addr(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    fn envelope(to: &str) -> Envelope {
        Envelope::new(addr("hoa@example.org"), addr(to))
    }

    const MSG: &[u8] = b"Message-ID: <b-1.o-1@example.org>\r\nSubject: hi\r\n\r\nhello\r\n";

    #[tokio::test]
    async fn records_accepted_messages() {
        let t = InMemoryTransport::new();
        assert_eq!(t.to_string(), "in-memory transport");
        assert!(t.is_empty());
        t.send(&envelope("a@example.org"), MSG).await.unwrap();
        t.send(&envelope("B@example.org"), b"x\r\n").await.unwrap();
        assert_eq!(t.len(), 2);
        let to_b = t.messages_to(&addr("b@EXAMPLE.org"));
        assert_eq!(to_b.len(), 1);
        assert_eq!(to_b[0].bytes, b"x\r\n");
        assert_eq!(
            t.messages()[0].message_id().as_deref(),
            Some("<b-1.o-1@example.org>")
        );
        assert_eq!(t.attempts(), 2);
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.attempts(), 2);
    }

    #[tokio::test]
    async fn address_faults_always_and_for_n_attempts() {
        let t = InMemoryTransport::new();
        let a = addr("a@example.org");
        let b = addr("b@example.org");
        t.fail_address(&a, Fault::Permanent);
        t.fail_address_times(&b, Fault::Transient, 2);
        for _ in 0..3 {
            let e = t.send(&envelope("A@example.org"), MSG).await.unwrap_err();
            assert_eq!(e.class(), ErrorClass::Permanent);
            assert_eq!(e.code(), Some(550));
        }
        for _ in 0..2 {
            let e = t.send(&envelope("b@example.org"), MSG).await.unwrap_err();
            assert!(e.is_transient() && !e.is_connection());
            assert_eq!(e.code(), Some(451));
        }
        t.send(&envelope("b@example.org"), MSG).await.unwrap();
        assert_eq!(t.messages_to(&b).len(), 1);
        assert!(t.messages_to(&a).is_empty());
        assert_eq!(t.attempts_to(&b), 3);
        t.send(&envelope("c@example.org"), MSG).await.unwrap();
        t.clear_faults();
        t.send(&envelope("a@example.org"), MSG).await.unwrap();
        assert_eq!(t.len(), 3);
    }

    #[tokio::test]
    async fn connection_and_fatal_faults_are_classified() {
        let t = InMemoryTransport::new();
        t.fail_address(&addr("c@example.org"), Fault::Connection);
        let e = t.send(&envelope("c@example.org"), MSG).await.unwrap_err();
        assert!(e.is_transient() && e.is_connection());
        t.fail_all(Fault::Fatal);
        let e = t.send(&envelope("d@example.org"), MSG).await.unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(e.code(), Some(535));
        assert_eq!(e.enhanced(), Some("5.7.8"));
        // The address rule wins over the every-send rule.
        let e = t.send(&envelope("c@example.org"), MSG).await.unwrap_err();
        assert!(e.is_connection());
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn fail_all_times_then_recovers() {
        let t = InMemoryTransport::new();
        t.fail_all_times(Fault::Connection, 2);
        assert!(t.send(&envelope("a@example.org"), MSG).await.is_err());
        assert!(t.send(&envelope("b@example.org"), MSG).await.is_err());
        assert!(t.send(&envelope("c@example.org"), MSG).await.is_ok());
        assert_eq!(t.len(), 1);
    }

    #[tokio::test]
    async fn lost_reply_records_the_message_and_reports_a_connection_error() {
        let t = InMemoryTransport::new();
        let a = addr("a@example.org");
        t.fail_address_times(&a, Fault::LostReply, 1);
        let e = t.send(&envelope("a@example.org"), MSG).await.unwrap_err();
        assert!(e.is_transient() && e.is_connection());
        t.send(&envelope("a@example.org"), MSG).await.unwrap();
        let copies = t.messages_to(&a);
        assert_eq!(copies.len(), 2, "delivered, then delivered again");
        assert_eq!(copies[0].message_id(), copies[1].message_id());
    }

    async fn failures_with_seed(seed: u64) -> Vec<usize> {
        let t = InMemoryTransport::new();
        t.fail_fraction(0.3, seed, Fault::Transient);
        let mut failed = Vec::new();
        for i in 0..400 {
            let to = format!("owner{i}@example.org");
            if t.send(&envelope(&to), MSG).await.is_err() {
                failed.push(i);
            }
        }
        assert_eq!(t.len() + failed.len(), 400);
        failed
    }

    #[tokio::test]
    async fn fraction_is_deterministic_and_roughly_right() {
        let a = failures_with_seed(7).await;
        let b = failures_with_seed(7).await;
        let c = failures_with_seed(8).await;
        assert_eq!(a, b, "same seed, same failures");
        assert_ne!(a, c, "another seed, other failures");
        assert!(
            (80..=160).contains(&a.len()),
            "about 30% of 400: {}",
            a.len()
        );
    }

    #[tokio::test]
    async fn fraction_does_not_depend_on_order_and_retries_draw_again() {
        let forward = InMemoryTransport::new();
        let backward = InMemoryTransport::new();
        forward.fail_fraction(0.5, 42, Fault::Transient);
        backward.fail_fraction(0.5, 42, Fault::Transient);
        let mut f = BTreeSet::new();
        let mut b = BTreeSet::new();
        for i in 0..100 {
            if forward
                .send(&envelope(&format!("o{i}@example.org")), MSG)
                .await
                .is_err()
            {
                f.insert(i);
            }
        }
        for i in (0..100).rev() {
            if backward
                .send(&envelope(&format!("o{i}@example.org")), MSG)
                .await
                .is_err()
            {
                b.insert(i);
            }
        }
        assert_eq!(f, b);
        // Retrying each failed recipient eventually gets through.
        for i in &f {
            let mut tries = 0;
            while forward
                .send(&envelope(&format!("o{i}@example.org")), MSG)
                .await
                .is_err()
            {
                tries += 1;
                assert!(tries < 40, "retries must draw afresh");
            }
        }
        assert_eq!(forward.len(), 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latency_shows_concurrency() {
        let t =
            std::sync::Arc::new(InMemoryTransport::new().with_latency(Duration::from_millis(30)));
        let sends = (0..8).map(|i| {
            let t = t.clone();
            async move { t.send(&envelope(&format!("o{i}@example.org")), MSG).await }
        });
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
        assert_eq!(t.max_in_flight(), 8);
        t.send(&envelope("x@example.org"), MSG).await.unwrap();
        assert_eq!(t.max_in_flight(), 8);
        assert_eq!(t.len(), 9);
    }

    #[tokio::test]
    async fn sequential_sends_are_one_in_flight() {
        let t = InMemoryTransport::new().with_latency(Duration::from_millis(1));
        for i in 0..3 {
            t.send(&envelope(&format!("o{i}@example.org")), MSG)
                .await
                .unwrap();
        }
        assert_eq!(t.max_in_flight(), 1);
    }
}
