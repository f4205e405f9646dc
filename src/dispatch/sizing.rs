//! How many deliveries a run claims at a time: what it settles in [`CLAIM_SPAN`],
//! measured as it goes.
//!
//! Claims are what other senders cannot take until their lease runs out, so a run
//! should hold little more than it is about to send: a chunk sized to the run's own
//! pace keeps the workers sharing a batch busy to its last message (none holds a
//! hoard while the others stand idle) and leaves little to wait for when one dies.
//! Each claim is a few repository calls whose cost hardly depends on their size, so
//! a fast run still claims in large chunks (up to [`MAX_CHUNK`]), and a slow one (a
//! mail server that answers slowly, a rate limit) in small ones, never below
//! [`MIN_CHUNK`] or its concurrency.

use std::time::Duration;

use tokio::time::Instant;

/// The time's worth of sending one claim brings in.
pub(super) const CLAIM_SPAN: Duration = Duration::from_millis(500);

/// The fewest deliveries a claim asks for once the pace is known (or the
/// concurrency, if larger): below that the claims' statements would cost more than
/// the messages' own.
pub(super) const MIN_CHUNK: usize = 16;

/// The most deliveries one claim asks for. With SQLite, 256 instead of 32 cut the
/// time of a 7,800-message send by a fifth (`benches/e2e/run.sh 10000`); larger
/// gains nothing.
pub(super) const MAX_CHUNK: usize = 256;

/// How long the settled messages are counted before the pace is taken from them:
/// short, so that the pace follows the run; each sample counts for half of the
/// pace, which smooths the noise.
const SAMPLE: Duration = Duration::from_millis(100);

/// A sample ends sooner once a whole chunk has settled in it, if it is at least
/// this long: a fast run leaves its small first claims behind after a few
/// milliseconds instead of a tenth of a second (a single process over SQLite
/// sends about 900 messages in 100 ms: 56 claims of 16 where 4 of 256 do).
const SHORTEST_SAMPLE: Duration = Duration::from_millis(10);

/// The run's pace, and the chunk it asks for.
pub(super) struct ClaimSizing {
    /// The fewest a claim asks for: the concurrency, or [`MIN_CHUNK`].
    floor: usize,
    /// The first claims' size, before a pace is known: the floor, or two messages
    /// per connection if more, so every connection starts at once and has a next
    /// message while the pace is learnt.
    first: usize,
    /// Messages settled per second, once a sample has been taken; each new sample
    /// counts for half.
    pace: Option<f64>,
    /// When the current sample began (the first message's start, then each sample's
    /// end), and the messages settled since.
    sample_start: Option<Instant>,
    settled: u32,
}

impl ClaimSizing {
    pub(super) fn new(concurrency: usize) -> Self {
        Self {
            floor: concurrency.clamp(MIN_CHUNK, MAX_CHUNK),
            first: concurrency.saturating_mul(2).clamp(MIN_CHUNK, MAX_CHUNK),
            pace: None,
            sample_start: None,
            settled: 0,
        }
    }

    /// A message started: the first one starts the pace's first sample. `now` is
    /// called only then, so later messages read no clock here.
    pub(super) fn started(&mut self, now: impl FnOnce() -> Instant) {
        self.sample_start.get_or_insert_with(now);
    }

    /// A message settled (sent, failed or held back); a sample older than
    /// [`SAMPLE`], or one of a whole chunk older than [`SHORTEST_SAMPLE`], becomes
    /// part of the pace.
    pub(super) fn settled(&mut self, now: Instant) {
        self.settled = self.settled.saturating_add(1);
        let Some(start) = self.sample_start else {
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        let whole_chunk = usize::try_from(self.settled).is_ok_and(|n| n >= self.chunk());
        if elapsed >= SAMPLE || (elapsed >= SHORTEST_SAMPLE && whole_chunk) {
            let sample = f64::from(self.settled) / elapsed.as_secs_f64();
            self.pace = Some(self.pace.map_or(sample, |p| (p + sample) / 2.0));
            self.sample_start = Some(now);
            self.settled = 0;
        }
    }

    /// How many deliveries the next claim asks for, and how few may wait before it is
    /// asked for: [`CLAIM_SPAN`] of the pace, from the floor to [`MAX_CHUNK`].
    pub(super) fn chunk(&self) -> usize {
        let Some(pace) = self.pace else {
            return self.first;
        };
        let wanted = (pace * CLAIM_SPAN.as_secs_f64()).ceil();
        if wanted >= MAX_CHUNK as f64 {
            MAX_CHUNK
        } else {
            // Below MAX_CHUNK and not negative, so the conversion is exact.
            (wanted as usize).max(self.floor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settles `n` messages evenly over `span` from `start`; returns the end.
    fn settle(s: &mut ClaimSizing, start: Instant, n: u32, span: Duration) -> Instant {
        for i in 1..=n {
            s.settled(start + span.mul_f64(f64::from(i) / f64::from(n)));
        }
        start + span
    }

    #[test]
    fn before_a_pace_the_floor_or_two_messages_per_connection() {
        assert_eq!(ClaimSizing::new(4).chunk(), MIN_CHUNK);
        assert_eq!(ClaimSizing::new(0).chunk(), MIN_CHUNK);
        assert_eq!(ClaimSizing::new(20).chunk(), 40);
        assert_eq!(ClaimSizing::new(1000).chunk(), MAX_CHUNK);
    }

    #[test]
    fn half_a_second_of_the_measured_pace() {
        let t0 = Instant::now();
        let mut s = ClaimSizing::new(4);
        s.started(|| t0);
        // 184 messages a second, as one worker into a mail server that waits 20 ms.
        let end = settle(&mut s, t0, 184, Duration::from_secs(1));
        assert!((92..=93).contains(&s.chunk()), "{}", s.chunk());
        // The pace halves: each sample counts for half, so within a second the
        // chunk follows (46 exactly, plus what is left of the old pace).
        settle(&mut s, end, 92, Duration::from_secs(1));
        assert!((46..=47).contains(&s.chunk()), "{}", s.chunk());
    }

    #[test]
    fn bounded_by_the_floor_and_the_most() {
        let t0 = Instant::now();
        let mut slow = ClaimSizing::new(4);
        slow.started(|| t0);
        settle(&mut slow, t0, 6, Duration::from_secs(1));
        assert_eq!(slow.chunk(), MIN_CHUNK, "a rate limit's pace");
        let mut wide = ClaimSizing::new(40);
        wide.started(|| t0);
        settle(&mut wide, t0, 6, Duration::from_secs(1));
        assert_eq!(wide.chunk(), 40, "never below the concurrency");
        let mut fast = ClaimSizing::new(4);
        fast.started(|| t0);
        settle(&mut fast, t0, 5000, Duration::from_secs(1));
        assert_eq!(fast.chunk(), MAX_CHUNK);
    }

    #[test]
    fn no_pace_until_a_sample_is_long_enough() {
        let t0 = Instant::now();
        let mut s = ClaimSizing::new(4);
        s.started(|| t0);
        // Many messages, but in under the shortest sample.
        settle(&mut s, t0, 100, Duration::from_millis(9));
        assert_eq!(s.chunk(), MIN_CHUNK);
        let mut slow = ClaimSizing::new(4);
        slow.started(|| t0);
        // Fewer than a chunk, in under a whole sample.
        settle(&mut slow, t0, 15, Duration::from_millis(90));
        assert_eq!(slow.chunk(), MIN_CHUNK);
    }

    #[test]
    fn a_fast_run_leaves_its_first_small_chunks_within_milliseconds() {
        let t0 = Instant::now();
        let mut s = ClaimSizing::new(4);
        s.started(|| t0);
        // 9,000 messages a second, as one process over SQLite: 12 ms is enough.
        settle(&mut s, t0, 108, Duration::from_millis(12));
        assert_eq!(s.chunk(), MAX_CHUNK);
    }
}
