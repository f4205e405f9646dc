//! The rate limit: slots taken from the batch's schedule in the store
//! ([`InvitationStore::take_send_slots`](crate::repository::InvitationStore::take_send_slots)),
//! so [`SendOptions::rate_per_second`] holds for the whole batch whatever the number
//! of processes sending it, a group of slots per statement.
//!
//! Each run keeps the slots it was granted and not yet used in a local queue; the
//! first attempt that finds it empty takes the next group while the others wait for
//! it. A group is about [`GROUP_SPAN`] of the rate, so a statement serves many
//! messages (12 at 50 a second) and a worker that stops or dies leaves at most that
//! much of the batch's schedule unused: unused slots only lower the rate, never raise
//! it. The store says when the first slot starts relative to its own clock; the run
//! waits that long from when the answer came, so workers whose clocks differ agree.

use std::time::Duration;

use crate::domain::{BatchId, Timestamp};

use super::stop::RunState;
use super::{Engine, SendOptions};

/// How much of the rate one statement takes: a quarter of a second's worth.
const GROUP_SPAN: Duration = Duration::from_millis(250);
/// The most slots one statement takes, whatever the rate.
const MAX_GROUP: u32 = 1000;

/// The slots a run was granted and has not used yet.
pub(super) struct Slots {
    batch: BatchId,
    /// The next granted slot, by the run's clock.
    next: Timestamp,
    remaining: u32,
}

impl Slots {
    pub(super) fn new(batch: BatchId) -> Self {
        Self {
            batch,
            next: Timestamp::from_unix_seconds(0),
            remaining: 0,
        }
    }
}

/// How much wider than `1 / rate` the slots are spaced: headroom for the jitter
/// between a slot and the moment the server counts the message (round trips to the
/// store and to the mail server differ from message to message and from worker to
/// worker), so a limit of N a second counted on the server's clock holds in every
/// second, not only on average.
///
/// Slots `s` apart put at most `floor((1 + J) / s) + 1` messages in any one second
/// of the server's clock when each message reaches it between 0 and `J` seconds
/// after its slot; with `s = HEADROOM / N` that is at most N while `J` stays under
/// `HEADROOM - 1` seconds, at any rate. 5% allows 50 ms: 2% (20 ms) let one second
/// of four workers at 50 a second into a mail server on loopback count 51
/// (`benches/workers/run.sh rate`), and no headroom let four workers over PostgreSQL
/// at 200 a second count 202.
const HEADROOM: f64 = 1.05;

/// The interval between two slots at `rate` messages a second, with [`HEADROOM`].
/// Options are validated before a send, so the interval is at most an hour (and a
/// little); the bound keeps a rate that slipped past from panicking in the clock
/// arithmetic.
pub(super) fn interval(rate: f64) -> Duration {
    Duration::try_from_secs_f64(HEADROOM / rate)
        .unwrap_or(Duration::MAX)
        .min(Duration::from_secs_f64(
            HEADROOM / SendOptions::MIN_RATE_PER_SECOND,
        ))
        .max(Duration::from_nanos(1))
}

/// How many slots one statement takes at `rate`: [`GROUP_SPAN`] of it, at least 1,
/// at most [`MAX_GROUP`].
pub(super) fn group_size(rate: f64) -> u32 {
    let n = (rate * GROUP_SPAN.as_secs_f64()).floor();
    if n >= f64::from(MAX_GROUP) {
        MAX_GROUP
    } else if n >= 1.0 {
        // In 1..MAX_GROUP, so the conversion is exact.
        n as u32
    } else {
        1
    }
}

impl Engine<'_> {
    /// Waits for the next slot under the rate limit, if there is one; `false` when
    /// the run stopped meanwhile, or when the store failed to grant slots (the run
    /// then stops with [`StopReason::StoreUnavailable`](crate::StopReason::StoreUnavailable),
    /// the message unsent and its delivery pending).
    pub(super) async fn pace(&self, state: &RunState) -> bool {
        let Some(rate) = self.options.rate_per_second.filter(|r| *r > 0.0) else {
            return true;
        };
        let interval = interval(rate);
        let slot = {
            let mut slots = state.slots.lock().await;
            if slots.remaining == 0 {
                let asked = self.repo.take_send_slots(
                    &slots.batch,
                    interval,
                    group_size(rate),
                    self.clock.now(),
                );
                let granted = tokio::select! {
                    biased;
                    () = state.stopped(self.control) => return false,
                    granted = asked => granted,
                };
                match granted {
                    Ok(granted) => {
                        slots.next = self.clock.now() + granted.starts_in();
                        slots.remaining = granted.count;
                    }
                    Err(error) => {
                        state.store_failed(error);
                        return false;
                    }
                }
            }
            let slot = slots.next;
            slots.next = slot + interval;
            slots.remaining -= 1;
            slot
        };
        let wait = slot - self.clock.now();
        wait.is_zero() || self.wait(wait, state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_a_quarter_second_of_the_rate() {
        assert_eq!(group_size(50.0), 12);
        assert_eq!(group_size(14.0), 3);
        assert_eq!(group_size(1.0), 1);
        assert_eq!(group_size(SendOptions::MIN_RATE_PER_SECOND), 1);
        assert_eq!(group_size(SendOptions::MAX_RATE_PER_SECOND), MAX_GROUP);
        assert_eq!(interval(50.0), Duration::from_millis(21));
        assert_eq!(
            interval(SendOptions::MIN_RATE_PER_SECOND),
            Duration::from_secs(3780)
        );
    }
}
