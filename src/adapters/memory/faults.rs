//! The faults [`InMemoryTransport`] injects: what each one returns, the rules that
//! say when one fires, and the deterministic draw behind
//! [`fail_fraction`](InMemoryTransport::fail_fraction).

use super::transport::{InMemoryTransport, TransportState};
use crate::domain::EmailAddress;
use crate::transport::TransportError;

/// A delivery failure [`InMemoryTransport`] can be told to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A transient reply (`451 4.3.0`): the engine may retry.
    Transient,
    /// A transient connection error (refused, dropped, timed out).
    Connection,
    /// A permanent reply (`550 5.1.1`): this recipient fails, no retry.
    Permanent,
    /// A fatal error (`535 5.7.8`, authentication refused): nothing can be sent.
    Fatal,
    /// The message is accepted and recorded, but the reply is lost: the call returns
    /// a transient connection error, so the engine sends it again (with the same
    /// Message-ID) and the recipient gets two copies.
    LostReply,
}

impl Fault {
    pub(super) fn error(self) -> TransportError {
        match self {
            Fault::Transient => {
                TransportError::from_reply(451, Some("4.3.0".into()), "injected transient failure")
            }
            Fault::Connection => TransportError::connection("injected: connection dropped"),
            Fault::Permanent => TransportError::from_reply(
                550,
                Some("5.1.1".into()),
                "injected: mailbox unavailable",
            ),
            Fault::Fatal => TransportError::fatal("injected: authentication refused")
                .with_code(535, Some("5.7.8".into())),
            Fault::LostReply => TransportError::connection(
                "injected: connection lost after the message was accepted",
            ),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    fault: Fault,
    /// `None`: always; `Some(n)`: the next `n` attempts.
    remaining: Option<u32>,
}

impl Rule {
    /// Whether the rule fires for this attempt (and counts it down).
    fn fire(&mut self) -> Option<Fault> {
        match &mut self.remaining {
            None => Some(self.fault),
            Some(0) => None,
            Some(n) => {
                *n -= 1;
                Some(self.fault)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct FractionRule {
    fault: Fault,
    fraction: f64,
    seed: u64,
}

/// SplitMix64: a small, fixed mixing function, so fault selection is the same on
/// every platform and Rust version.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl InMemoryTransport {
    /// Every send to `to` fails with `fault` (until [`clear_faults`](Self::clear_faults)).
    pub fn fail_address(&self, to: &EmailAddress, fault: Fault) {
        self.set_address_rule(to, fault, None);
    }

    /// The next `times` sends to `to` fail with `fault`; later ones go through.
    pub fn fail_address_times(&self, to: &EmailAddress, fault: Fault, times: u32) {
        self.set_address_rule(to, fault, Some(times));
    }

    fn set_address_rule(&self, to: &EmailAddress, fault: Fault, remaining: Option<u32>) {
        self.lock()
            .by_address
            .insert(to.normalized().to_owned(), Rule { fault, remaining });
    }

    /// Every send fails with `fault` (e.g. [`Fault::Fatal`]: authentication refused).
    pub fn fail_all(&self, fault: Fault) {
        self.lock().all = Some(Rule {
            fault,
            remaining: None,
        });
    }

    /// The next `times` sends, whatever the recipient, fail with `fault`.
    pub fn fail_all_times(&self, fault: Fault, times: u32) {
        self.lock().all = Some(Rule {
            fault,
            remaining: Some(times),
        });
    }

    /// About `fraction` (0.0 to 1.0) of all sends fail with `fault`. Which ones is
    /// decided from `seed`, the recipient and the number of earlier attempts to that
    /// recipient, so the choice is the same on every run whatever the order in which
    /// concurrent sends arrive, and a retry of a failed recipient draws again.
    pub fn fail_fraction(&self, fraction: f64, seed: u64, fault: Fault) {
        self.lock().fraction = Some(FractionRule {
            fault,
            fraction: fraction.clamp(0.0, 1.0),
            seed,
        });
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        let mut state = self.lock();
        state.by_address.clear();
        state.all = None;
        state.fraction = None;
    }

    /// Counts the attempt and decides its fault, if any.
    pub(super) fn attempt(state: &mut TransportState, key: &str) -> Option<Fault> {
        state.attempts += 1;
        let counter = state.attempts_by_address.entry(key.to_owned()).or_insert(0);
        let attempt = *counter;
        *counter += 1;
        if let Some(fault) = state.by_address.get_mut(key).and_then(Rule::fire) {
            return Some(fault);
        }
        if let Some(fault) = state.all.as_mut().and_then(Rule::fire) {
            return Some(fault);
        }
        let rule = state.fraction?;
        let draw = mix(rule.seed ^ mix(fnv1a(key.as_bytes()) ^ mix(u64::from(attempt))));
        // The top 53 bits as a number in [0, 1).
        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
        (unit < rule.fraction).then_some(rule.fault)
    }
}
