//! Event time. The wall clock is only a suggestion: event times handed out by a
//! [`MonotonicClock`] never go backwards, even when the system clock is set back.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Nanoseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct EventTime(pub u64);

impl EventTime {
    /// Formats as RFC 3339 in UTC with nanoseconds.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0);
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }

    /// Parses an RFC 3339 time. Event times are nanoseconds since 1970 in 64
    /// bits, so a time before 1970 becomes the first of them and one after
    /// 2554 the last: no event is earlier or later, so a read as of such a
    /// time is a read of the initial or the newest state.
    ///
    /// # Errors
    /// Returns a message when the text is not RFC 3339.
    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        let t = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}"))?;
        let nanos = t.unix_timestamp_nanos().max(0);
        Ok(EventTime(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A source of wall-clock readings. Injected so tests can move time at will.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> EventTime;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> EventTime {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        EventTime(u64::try_from(nanos).unwrap_or(0))
    }
}

/// Turns wall-clock readings into event times that never decrease.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock {
    last: EventTime,
}

impl MonotonicClock {
    /// Starts after `last`, the newest time already in the log.
    pub fn starting_after(last: EventTime) -> Self {
        Self { last }
    }

    /// The next event time given a fresh wall-clock reading: the reading, or the
    /// last time handed out if the reading is older.
    pub fn tick(&mut self, reading: EventTime) -> EventTime {
        self.last = self.last.max(reading);
        self.last
    }

    pub fn last(&self) -> EventTime {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_never_goes_backwards() {
        let mut clock = MonotonicClock::starting_after(EventTime(100));
        assert_eq!(clock.tick(EventTime(50)), EventTime(100));
        assert_eq!(clock.tick(EventTime(200)), EventTime(200));
        assert_eq!(clock.tick(EventTime(150)), EventTime(200));
        assert_eq!(clock.tick(EventTime(201)), EventTime(201));
    }

    #[test]
    fn rfc3339_round_trips() {
        let t = EventTime(1_700_000_000_123_456_789);
        let text = t.to_rfc3339();
        assert_eq!(text, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(EventTime::parse_rfc3339(&text).unwrap(), t);
        assert!(EventTime::parse_rfc3339("yesterday").is_err());
        assert_eq!(EventTime::parse_rfc3339("1969-12-31T23:59:59Z"), Ok(EventTime(0)));
        assert_eq!(EventTime::parse_rfc3339("2999-01-01T00:00:00Z"), Ok(EventTime(u64::MAX)));
    }
}
