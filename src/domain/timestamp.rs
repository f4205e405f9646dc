//! Points in time, always UTC, serialised as RFC 3339.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time in UTC. Comes from a [`Clock`](crate::clock::Clock), never from the
/// system directly, so expiry and backoff can be tested without sleeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// From whole seconds since the Unix epoch.
    pub fn from_unix_seconds(seconds: i64) -> Self {
        Self(OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    /// From a `time` value, converted to UTC.
    pub fn from_offset_date_time(at: OffsetDateTime) -> Self {
        Self(at.to_offset(time::UtcOffset::UTC))
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i128 {
        self.0.unix_timestamp_nanos() / 1_000_000
    }

    /// The `time` value.
    pub fn as_offset_date_time(self) -> OffsetDateTime {
        self.0
    }

    /// RFC 3339, e.g. `2026-11-26T14:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        self.0
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.unix_seconds().to_string())
    }

    /// Parses RFC 3339.
    pub fn parse_rfc3339(s: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339).map(Self::from_offset_date_time)
    }

    /// The calendar date, `YYYY-MM-DD`: how an expiry is shown to an owner.
    pub fn date_string(self) -> String {
        let d = self.0.date();
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0 + rhs)
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0 - rhs)
    }
}

impl Sub for Timestamp {
    type Output = Duration;
    /// The time from `rhs` to `self`, zero when `rhs` is later.
    fn sub(self, rhs: Timestamp) -> Duration {
        (self.0 - rhs.0).try_into().unwrap_or(Duration::ZERO)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339_and_dates() {
        let t = Timestamp::from_unix_seconds(1_795_701_600);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        assert_eq!(t.date_string(), "2026-11-26");
        let later = t + Duration::from_secs(90);
        assert_eq!(later - t, Duration::from_secs(90));
        assert_eq!(t - later, Duration::ZERO);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
