//! Time as the workflow sees it. Everything that reads the time or waits (token expiry,
//! retry backoff, rate limiting) goes through a [`Clock`], so tests can move time by
//! hand instead of sleeping.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::Timestamp;

/// A source of the current time that can also wait.
#[async_trait]
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Waits for `duration` (a manual clock advances itself instead).
    async fn sleep(&self, duration: Duration);
}

/// The system's clock; waiting uses tokio's timer, so it needs a tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_offset_date_time(time::OffsetDateTime::now_utc())
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A clock that moves only when told to. `sleep` returns at once and advances the
/// clock by the duration, so backoff and expiry run instantly in tests while the
/// times they record stay consistent.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
    slept: Mutex<Vec<Duration>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Mutex::new(start),
            slept: Mutex::new(Vec::new()),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().expect("clock lock");
        *now = *now + by;
    }

    /// Sets the clock.
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().expect("clock lock") = to;
    }

    /// Every duration `sleep` was asked for, in order (to check backoff).
    pub fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().expect("clock lock").clone()
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock lock")
    }

    async fn sleep(&self, duration: Duration) {
        self.slept.lock().expect("clock lock").push(duration);
        self.advance(duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_advances_on_sleep() {
        let clock = ManualClock::new(Timestamp::from_unix_seconds(100));
        clock.sleep(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), Timestamp::from_unix_seconds(105));
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(5)]);
    }
}
