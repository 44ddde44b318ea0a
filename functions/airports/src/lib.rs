//! `airports`: per-airport traffic, keyed by FAA code (`EWR`, `IAH`, ...).
//!
//! The events come from `planes`, which emits one per flight and airport:
//!
//! - `Departure {"dep_delay": int | null}`: a flight left the airport;
//! - `Arrival {"arr_delay": int | null}`: a flight reached the airport.
//!
//! Delays are minutes, whole numbers written as integers or as floats such as `2.0`;
//! a missing delay is `null`. The state is `{"departures", "arrivals", "dep_delay"}`,
//! all 0 for a new airport: a `Departure` counts in `departures` and adds its delay
//! to `dep_delay` (a `null` adds 0); an `Arrival` counts in `arrivals`. The sums are
//! integers, so the JSON state is exact; one that would overflow is rejected.
//! There is no reply.

use julato_sdk::prelude::*;

use serde::de;
use serde::{Deserialize, Deserializer, Serialize};

/// A flight left the airport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Event)]
#[serde(default)]
pub struct Departure {
    /// Departure delay in minutes (early departures count negative), if known.
    #[serde(deserialize_with = "whole")]
    pub dep_delay: Option<i64>,
}

/// A flight reached the airport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Event)]
#[serde(default)]
pub struct Arrival {
    /// Arrival delay in minutes (early arrivals count negative), if known.
    #[serde(deserialize_with = "whole")]
    pub arr_delay: Option<i64>,
}

/// What is known about one airport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Airport {
    /// Flights that left the airport.
    pub departures: i64,
    /// Flights that reached the airport.
    pub arrivals: i64,
    /// Total departure delay, in minutes (early departures count negative).
    pub dep_delay: i64,
}

/// Counts a departure and adds its delay.
///
/// # Errors
///
/// [`HandlerError::Rejected`] if a total would overflow; otherwise only those of
/// decoding (data that is not a departure is an invalid event).
#[handler]
pub fn departure(event: Departure, state: Airport) -> Result<Airport, HandlerError> {
    Ok(Airport {
        departures: add("departures", state.departures, 1)?,
        dep_delay: add("dep_delay", state.dep_delay, event.dep_delay.unwrap_or(0))?,
        ..state
    })
}

/// Counts an arrival.
///
/// # Errors
///
/// [`HandlerError::Rejected`] if the count would overflow; otherwise only those of
/// decoding (data that is not an arrival is an invalid event).
#[handler]
pub fn arrival(_event: Arrival, state: Airport) -> Result<Airport, HandlerError> {
    Ok(Airport { arrivals: add("arrivals", state.arrivals, 1)?, ..state })
}

julato_sdk::function! {
    state: Airport,
    handlers: [departure, arrival],
}

/// `total + amount`, or a rejection naming the `total` that would overflow.
fn add(what: &str, total: i64, amount: i64) -> Result<i64, HandlerError> {
    total
        .checked_add(amount)
        .ok_or_else(|| HandlerError::rejected(format!("adding {amount} overflows {what}")))
}

/// Reads an optional whole number written as a JSON integer or as a float with no
/// fractional part (`2` or `2.0`); `null` is `None`.
fn whole<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    number
        .as_i64()
        .or_else(|| {
            // Whole and well inside the range where f64 represents integers exactly.
            number.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
        })
        .map(Some)
        .ok_or_else(|| de::Error::custom(format!("{number} is not a whole number or null")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use julato_sdk::ContextInfo;

    fn handle(event_type: &str, json: &str, state: &str) -> Result<String, HandlerError> {
        let payload = Payload::Json(json.into());
        let outcome = FUNCTION.handle(ContextInfo::default(), event_type, payload, state)?;
        assert_eq!(outcome.reply, None);
        assert_eq!(outcome.emits, []);
        Ok(outcome.state)
    }

    #[test]
    fn starts_empty() {
        assert_eq!(FUNCTION.init_json().unwrap(), r#"{"departures":0,"arrivals":0,"dep_delay":0}"#);
        assert_eq!(FUNCTION.event_types(), ["Departure", "Arrival"]);
    }

    #[test]
    fn folds_departures_and_arrivals() {
        let state = FUNCTION.init_json().unwrap();
        let state = handle("Departure", r#"{"dep_delay":2}"#, &state).unwrap();
        assert_eq!(state, r#"{"departures":1,"arrivals":0,"dep_delay":2}"#);
        let state = handle("Arrival", r#"{"arr_delay":11}"#, &state).unwrap();
        assert_eq!(state, r#"{"departures":1,"arrivals":1,"dep_delay":2}"#);
        // Early departures count negative; floats that are whole numbers are accepted.
        let state = handle("Departure", r#"{"dep_delay":-5.0}"#, &state).unwrap();
        assert_eq!(state, r#"{"departures":2,"arrivals":1,"dep_delay":-3}"#);
        let state = handle("Departure", r#"{"dep_delay":46.0}"#, &state).unwrap();
        assert_eq!(state, r#"{"departures":3,"arrivals":1,"dep_delay":43}"#);
    }

    #[test]
    fn unknown_delays_count_zero() {
        let state = FUNCTION.init_json().unwrap();
        let state = handle("Departure", r#"{"dep_delay":null}"#, &state).unwrap();
        let state = handle("Departure", "{}", &state).unwrap();
        let state = handle("Arrival", r#"{"arr_delay":null}"#, &state).unwrap();
        let state = handle("Arrival", "{}", &state).unwrap();
        assert_eq!(state, r#"{"departures":2,"arrivals":2,"dep_delay":0}"#);
    }

    #[test]
    fn extra_fields_are_ignored() {
        let state = FUNCTION.init_json().unwrap();
        let json = r#"{"dep_delay":2,"carrier":"UA","flight":1545,"tailnum":"N14228"}"#;
        let state = handle("Departure", json, &state).unwrap();
        assert_eq!(state, r#"{"departures":1,"arrivals":0,"dep_delay":2}"#);
    }

    #[test]
    fn invalid_data_is_rejected() {
        let state = FUNCTION.init_json().unwrap();
        let error = handle("Departure", r#"{"dep_delay":2.5}"#, &state).unwrap_err();
        let HandlerError::InvalidEvent(message) = error else { panic!("{error:?}") };
        assert!(message.contains("whole number"), "{message}");
        for (event_type, json) in [
            ("Departure", r#"{"dep_delay":"late"}"#),
            ("Arrival", r#"{"arr_delay":1.5}"#),
            ("Arrival", r#"{"arr_delay":[]}"#),
            ("Arrival", "3"),
            ("Departure", "{"),
        ] {
            let error = handle(event_type, json, &state).unwrap_err();
            assert!(
                matches!(error, HandlerError::InvalidEvent(_)),
                "{event_type} {json}: {error:?}"
            );
        }
        let error = handle("Departure", r#"{"dep_delay":1}"#, "7").unwrap_err();
        assert!(matches!(error, HandlerError::InvalidState(_)), "{error:?}");
        let error = handle("Flight", "{}", &state).unwrap_err();
        assert_eq!(error, HandlerError::UnsupportedEventType("Flight".into()));
    }

    #[test]
    fn overflow_is_rejected() {
        let state =
            format!(r#"{{"departures":1,"arrivals":{},"dep_delay":{}}}"#, i64::MAX, i64::MAX);
        let error = handle("Departure", r#"{"dep_delay":1}"#, &state).unwrap_err();
        assert!(matches!(error, HandlerError::Rejected(_)), "{error:?}");
        let error = handle("Arrival", "{}", &state).unwrap_err();
        assert!(matches!(error, HandlerError::Rejected(_)), "{error:?}");
    }
}
