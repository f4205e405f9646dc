//! How a batch is sent: concurrency, rate, retries, leases and outcome groups, each
//! with its range, and the defaults.

use std::time::Duration;

use crate::error::InvalidSetting;

/// How transient errors are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Transport attempts per delivery in one run, the first included (default 3).
    pub max_attempts: u32,
    /// The wait after the first failure (default 1 s); it doubles after each further
    /// failure, up to `max_backoff`, and is jittered (between half and all of it) so
    /// parallel workers do not retry in lock step.
    pub initial_backoff: Duration,
    /// The longest wait (default 60 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// How a batch is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SendOptions {
    /// Messages in flight at once (default 8). An SMTP transport typically opens as
    /// many connections.
    pub concurrency: usize,
    /// At most this many messages started per second for the whole batch (default
    /// `None`: no limit), however many processes send it at once: slots come from the
    /// batch's schedule in the store
    /// ([`take_send_slots`](crate::repository::InvitationStore::take_send_slots)), a
    /// group of about a quarter of a second's worth per statement. A process that stops
    /// leaves at most its last group unused (the rate dips, never rises); processes
    /// that name different rates each take slots at their own spacing from the one
    /// schedule, so the batch never goes faster than the highest rate named. Slots are
    /// spaced 5% wider than `1 / rate`, headroom for round-trip jitter (up to 50 ms)
    /// so the limit holds in every second counted on the mail server's clock. A retry takes a slot
    /// too. See [`validate`](Self::validate) for the range.
    pub rate_per_second: Option<f64>,
    /// Retries of transient errors.
    pub retry: RetryPolicy,
    /// Stop the run when this many deliveries in a row exhausted their retries on
    /// connection errors (default 3): the server is unreachable, and failing every
    /// remaining owner would be wrong. Those deliveries go back to pending. Fewer do
    /// as well when nothing gets through after them (the batch has no more to send):
    /// an outage fails nobody, for a batch of 1 as for 10,000. Each such run is
    /// counted on the delivery ([`Delivery::unreachable_runs`](crate::domain::Delivery::unreachable_runs)); in its
    /// [`UNREACHABLE_RUNS`]th it fails with its last error instead. A connection
    /// failure followed by a message that gets through fails at once, as before: the
    /// server was reachable, the message is the problem.
    pub unreachable_after: usize,
    /// How long a claim on a delivery lasts unless its sender renews it (default
    /// 20 s). A run renews all the claims it holds every quarter of this, in one
    /// repository call, so it never loses them however slow it is; it starts no
    /// message on a claim it could not renew for three quarters of it. Once a dead
    /// run's claims have gone this long without renewal, another run may take them
    /// over: a crash strands deliveries for at most this long, and a `resume` started
    /// at once finishes within about one lease plus the sending time.
    /// [`OwnerAccess::resume_after_crash`](crate::OwnerAccess::resume_after_crash)
    /// takes over every claim at once instead.
    pub claim_lease: Duration,
    /// Outcomes are recorded in groups (one repository call, one commit) of at most
    /// this many (default 32), or sooner when the oldest has waited `outcome_delay`.
    /// A group is recorded while the next messages go out; new messages wait when
    /// four groups' worth of outcomes are not yet recorded. After a crash, a message
    /// whose outcome was not yet recorded is sent again by `resume` with the same
    /// Message-ID, so this also bounds the duplicates a crash can cause: fewer than
    /// `4 × outcome_group + concurrency`. A group of 1 records every outcome on its
    /// own.
    pub outcome_group: usize,
    /// The longest an outcome waits for its group (default 100 ms).
    pub outcome_delay: Duration,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            rate_per_second: None,
            retry: RetryPolicy::default(),
            unreachable_after: 3,
            claim_lease: DEFAULT_CLAIM_LEASE,
            outcome_group: 32,
            outcome_delay: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// The most attempts per delivery in one run.
    pub const MAX_ATTEMPTS: u32 = 100;
    /// The longest wait between two attempts.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

    /// Checks the policy: `max_attempts` from 1 to [`MAX_ATTEMPTS`](Self::MAX_ATTEMPTS),
    /// `initial_backoff` at most `max_backoff`, which is at most
    /// [`MAX_BACKOFF`](Self::MAX_BACKOFF).
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=Self::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(InvalidSetting::new(
                "retry.max_attempts",
                self.max_attempts,
                format!(
                    "from 1 to {} (the first attempt included)",
                    Self::MAX_ATTEMPTS
                ),
            ));
        }
        if self.max_backoff > Self::MAX_BACKOFF {
            return Err(InvalidSetting::new(
                "retry.max_backoff",
                self.max_backoff,
                format!("at most {:?}", Self::MAX_BACKOFF),
            ));
        }
        if self.initial_backoff > self.max_backoff {
            return Err(InvalidSetting::new(
                "retry.initial_backoff",
                self.initial_backoff,
                format!("at most retry.max_backoff ({:?})", self.max_backoff),
            ));
        }
        Ok(())
    }
}

impl SendOptions {
    /// The most messages in flight at once.
    pub const MAX_CONCURRENCY: usize = 1024;
    /// The slowest rate: one message an hour. Slower is not a bulk send, and the wait
    /// for a slot must stay a time the clock can add.
    pub const MIN_RATE_PER_SECOND: f64 = 1.0 / 3600.0;
    /// The fastest rate a limit may name (for no limit, `None`).
    pub const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;
    /// The shortest claim lease: a run renews every quarter of a lease, so a shorter
    /// one would be mostly renewals.
    pub const MIN_CLAIM_LEASE: Duration = Duration::from_millis(100);
    /// The longest claim lease.
    pub const MAX_CLAIM_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);
    /// The largest group of outcomes recorded at once.
    pub const MAX_OUTCOME_GROUP: usize = 10_000;
    /// The longest an outcome may wait for its group.
    pub const MAX_OUTCOME_DELAY: Duration = Duration::from_secs(60);

    /// Checks every setting against its range: `concurrency` from 1 to
    /// [`MAX_CONCURRENCY`](Self::MAX_CONCURRENCY); `rate_per_second` `None` (no limit)
    /// or a finite number from [`MIN_RATE_PER_SECOND`](Self::MIN_RATE_PER_SECOND) to
    /// [`MAX_RATE_PER_SECOND`](Self::MAX_RATE_PER_SECOND) (zero, negative, NaN and
    /// infinite rates are refused); the retry policy ([`RetryPolicy::validate`]);
    /// `unreachable_after` at least 1; `claim_lease` from
    /// [`MIN_CLAIM_LEASE`](Self::MIN_CLAIM_LEASE) to
    /// [`MAX_CLAIM_LEASE`](Self::MAX_CLAIM_LEASE); `outcome_group` from 1 to
    /// [`MAX_OUTCOME_GROUP`](Self::MAX_OUTCOME_GROUP); `outcome_delay` at most
    /// [`MAX_OUTCOME_DELAY`](Self::MAX_OUTCOME_DELAY).
    ///
    /// [`OwnerAccessBuilder::build`](crate::OwnerAccessBuilder::build) calls it, so a
    /// service only ever holds options that passed: nothing is stored or sent with
    /// options out of range.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1..=Self::MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(InvalidSetting::new(
                "concurrency",
                self.concurrency,
                format!("from 1 to {}", Self::MAX_CONCURRENCY),
            ));
        }
        if let Some(rate) = self.rate_per_second
            && !(Self::MIN_RATE_PER_SECOND..=Self::MAX_RATE_PER_SECOND).contains(&rate)
        {
            return Err(InvalidSetting::new(
                "rate_per_second",
                rate,
                format!(
                    "a number of messages per second from 1/3600 (one an hour) to {}",
                    Self::MAX_RATE_PER_SECOND
                ),
            ));
        }
        self.retry.validate()?;
        if self.unreachable_after == 0 {
            return Err(InvalidSetting::new(
                "unreachable_after",
                self.unreachable_after,
                "at least 1",
            ));
        }
        if !(Self::MIN_CLAIM_LEASE..=Self::MAX_CLAIM_LEASE).contains(&self.claim_lease) {
            return Err(InvalidSetting::new(
                "claim_lease",
                self.claim_lease,
                format!(
                    "from {:?} to {:?}",
                    Self::MIN_CLAIM_LEASE,
                    Self::MAX_CLAIM_LEASE
                ),
            ));
        }
        if !(1..=Self::MAX_OUTCOME_GROUP).contains(&self.outcome_group) {
            return Err(InvalidSetting::new(
                "outcome_group",
                self.outcome_group,
                format!("from 1 to {}", Self::MAX_OUTCOME_GROUP),
            ));
        }
        if self.outcome_delay > Self::MAX_OUTCOME_DELAY {
            return Err(InvalidSetting::new(
                "outcome_delay",
                self.outcome_delay,
                format!("at most {:?}", Self::MAX_OUTCOME_DELAY),
            ));
        }
        Ok(())
    }
}

/// The default [`SendOptions::claim_lease`]: short, since a crash strands deliveries
/// this long, yet four renewals' worth, so a store slow for a few seconds (SQLite
/// waits up to 10 s for a lock) does not cost a live sender its claims.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(20);

/// A delivery left pending because the server could not be reached in this many runs
/// in a row fails with its last error. The transport classifies each error; deciding
/// that the server is unreachable is the send engine's call, and one failed owner
/// never stops a batch. A server that is down fails nobody: every run stops with the
/// rest pending. But a message that makes the server
/// drop the connection every time looks the same as an outage from the sender's side,
/// and without a limit it would stop every run of its batch, for ever.
pub const UNREACHABLE_RUNS: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        };
        let waits: Vec<u64> = (1..=5).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
    }
}
