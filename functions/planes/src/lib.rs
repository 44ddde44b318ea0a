//! `planes`: per-plane totals of the nycflights13 flights, keyed by tail number.
//!
//! Each `Flight` event is one row of the `flights` table as a JSON object with every
//! column; numbers are JSON numbers (whole numbers, written as integers or as floats
//! such as `1400.0`) and `NA` is `null`. The state is
//! `{"flights", "cancelled", "distance", "air_time", "arr_delay", "location"}`:
//! a row without `dep_time` is a cancelled flight and only counts in `cancelled`;
//! any other row counts in `flights` and adds its distance, air time and arrival delay
//! (a `null` adds 0). `location` becomes the row's `dest` when the plane arrived
//! (`arr_time` is not `null`). The sums are integers, so the JSON state is exact.
//! There is no reply.
//!
//! Each flight also tells the airports about itself, by emitting events to the
//! `airports` function (keyed by FAA code), departure first:
//!
//! - `Departure {"dep_delay": int | null}` to `airports/{origin}` when the flight
//!   departed (`dep_time` is not `null`) and its `origin` is known;
//! - `Arrival {"arr_delay": int | null}` to `airports/{dest}` when it arrived
//!   (`arr_time` is not `null`) and its `dest` is known.
//!
//! A cancelled flight emits nothing; a diverted one (departed, never arrived) emits
//! only its `Departure`.

use julato_sdk::prelude::*;

use serde::de;
use serde::{Deserialize, Deserializer, Serialize};

/// One row of the nycflights13 `flights` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Event)]
#[serde(default)]
pub struct Flight {
    /// Year of departure.
    #[serde(deserialize_with = "whole")]
    pub year: Option<i64>,
    /// Month of departure.
    #[serde(deserialize_with = "whole")]
    pub month: Option<i64>,
    /// Day of departure.
    #[serde(deserialize_with = "whole")]
    pub day: Option<i64>,
    /// Actual departure time (HHMM, local); `None` for a cancelled flight.
    #[serde(deserialize_with = "whole")]
    pub dep_time: Option<i64>,
    /// Scheduled departure time (HHMM, local).
    #[serde(deserialize_with = "whole")]
    pub sched_dep_time: Option<i64>,
    /// Departure delay in minutes.
    #[serde(deserialize_with = "whole")]
    pub dep_delay: Option<i64>,
    /// Actual arrival time (HHMM, local); `None` if the plane did not arrive.
    #[serde(deserialize_with = "whole")]
    pub arr_time: Option<i64>,
    /// Scheduled arrival time (HHMM, local).
    #[serde(deserialize_with = "whole")]
    pub sched_arr_time: Option<i64>,
    /// Arrival delay in minutes.
    #[serde(deserialize_with = "whole")]
    pub arr_delay: Option<i64>,
    /// Two-letter carrier code.
    #[serde(deserialize_with = "text")]
    pub carrier: Option<String>,
    /// Flight number.
    #[serde(deserialize_with = "whole")]
    pub flight: Option<i64>,
    /// Tail number: the key of the plane's process.
    #[serde(deserialize_with = "text")]
    pub tailnum: Option<String>,
    /// Origin airport (FAA code).
    #[serde(deserialize_with = "text")]
    pub origin: Option<String>,
    /// Destination airport (FAA code).
    #[serde(deserialize_with = "text")]
    pub dest: Option<String>,
    /// Minutes in the air.
    #[serde(deserialize_with = "whole")]
    pub air_time: Option<i64>,
    /// Miles between the airports.
    #[serde(deserialize_with = "whole")]
    pub distance: Option<i64>,
    /// Hour of the scheduled departure.
    #[serde(deserialize_with = "whole")]
    pub hour: Option<i64>,
    /// Minute of the scheduled departure.
    #[serde(deserialize_with = "whole")]
    pub minute: Option<i64>,
    /// Scheduled departure hour, as an RFC 3339 UTC timestamp.
    #[serde(deserialize_with = "text")]
    pub time_hour: Option<String>,
}

/// The function that receives the emitted [`Departure`] and [`Arrival`] events.
pub const AIRPORTS: &str = "airports";

/// A flight left an airport: emitted to `airports/{origin}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Event)]
pub struct Departure {
    /// Departure delay in minutes, if known.
    pub dep_delay: Option<i64>,
}

/// A flight reached an airport: emitted to `airports/{dest}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Event)]
pub struct Arrival {
    /// Arrival delay in minutes, if known.
    pub arr_delay: Option<i64>,
}

/// What is known about one plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plane {
    /// Flights that departed.
    pub flights: i64,
    /// Flights that were cancelled (no departure time).
    pub cancelled: i64,
    /// Miles flown.
    pub distance: i64,
    /// Minutes in the air.
    pub air_time: i64,
    /// Total arrival delay, in minutes (early arrivals count negative).
    pub arr_delay: i64,
    /// Where the plane last arrived, if known.
    pub location: Option<String>,
}

/// Folds one flight into the plane's totals, and emits its [`Departure`] to the origin
/// airport and its [`Arrival`] to the destination airport (see the module docs).
///
/// # Errors
///
/// None besides those of decoding (a row that is not a flight is an invalid event).
#[handler]
pub fn flight(event: Flight, state: Plane, ctx: &mut Context) -> Result<Plane, HandlerError> {
    let mut plane = state;
    if event.dep_time.is_none() {
        plane.cancelled += 1;
        return Ok(plane);
    }
    if let Some(origin) = airport(event.origin.as_deref()) {
        ctx.emit(AIRPORTS, origin, Departure { dep_delay: event.dep_delay });
    }
    if event.arr_time.is_some()
        && let Some(dest) = airport(event.dest.as_deref())
    {
        ctx.emit(AIRPORTS, dest, Arrival { arr_delay: event.arr_delay });
    }
    plane.flights += 1;
    plane.distance += event.distance.unwrap_or(0);
    plane.air_time += event.air_time.unwrap_or(0);
    plane.arr_delay += event.arr_delay.unwrap_or(0);
    if event.arr_time.is_some() {
        plane.location = event.dest;
    }
    Ok(plane)
}

julato_sdk::function! {
    state: Plane,
    handlers: [flight],
}

/// The airport code of a row's `origin` or `dest`, when it is known (neither `null` nor
/// empty).
fn airport(code: Option<&str>) -> Option<&str> {
    code.filter(|code| !code.is_empty())
}

/// Reads an optional whole number written as a JSON integer or as a float with no
/// fractional part (`1400` or `1400.0`); `null` is `None`.
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

/// Reads an optional string, also accepting a number for it (a tail number or a flight
/// code that a CSV converter took for one) as its decimal text; `null` is `None`.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(Option::<Text>::deserialize(deserializer)?.map(|text| match text {
        Text::Text(text) => text,
        Text::Number(number) => number.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use julato_sdk::{ContextInfo, EmittedEvent, Outcome};

    const ROW: &str = r#"{"year":2013,"month":1,"day":1,"dep_time":517,"sched_dep_time":515,
        "dep_delay":2,"arr_time":830,"sched_arr_time":819,"arr_delay":11,"carrier":"UA",
        "flight":1545,"tailnum":"N14228","origin":"EWR","dest":"IAH","air_time":227,
        "distance":1400,"hour":5,"minute":15,"time_hour":"2013-01-01T10:00:00Z"}"#;

    const CANCELLED: &str = r#"{"year":2013,"month":1,"day":1,"dep_time":null,
        "sched_dep_time":1630,"dep_delay":null,"arr_time":null,"sched_arr_time":1815,
        "arr_delay":null,"carrier":"EV","flight":4308,"tailnum":"N18120","origin":"EWR",
        "dest":"RDU","air_time":null,"distance":416,"hour":16,"minute":30,
        "time_hour":"2013-01-01T21:00:00Z"}"#;

    const DIVERTED: &str = r#"{"year":2013,"month":1,"day":1,"dep_time":2016.0,
        "sched_dep_time":1930.0,"dep_delay":46.0,"arr_time":null,"sched_arr_time":2220.0,
        "arr_delay":null,"carrier":"EV","flight":4204.0,"tailnum":"N14168","origin":"EWR",
        "dest":"OKC","air_time":null,"distance":1325.0,"hour":19.0,"minute":30.0,
        "time_hour":"2013-01-02T00:00:00Z"}"#;

    fn outcome(json: &str, state: &str) -> Result<Outcome, HandlerError> {
        let payload = Payload::Json(json.into());
        let outcome = FUNCTION.handle(ContextInfo::default(), "Flight", payload, state)?;
        assert_eq!(outcome.reply, None);
        Ok(outcome)
    }

    fn handle(json: &str, state: &str) -> Result<String, HandlerError> {
        outcome(json, state).map(|outcome| outcome.state)
    }

    /// The events a flight emits, folded into a new plane.
    fn emits(json: &str) -> Vec<EmittedEvent> {
        outcome(json, &FUNCTION.init_json().unwrap()).unwrap().emits
    }

    fn emitted(key: &str, event_type: &str, data: &str) -> EmittedEvent {
        EmittedEvent {
            function: "airports".into(),
            key: key.into(),
            event_type: event_type.into(),
            data: Payload::Json(data.into()),
        }
    }

    #[test]
    fn starts_empty() {
        assert_eq!(
            FUNCTION.init_json().unwrap(),
            r#"{"flights":0,"cancelled":0,"distance":0,"air_time":0,"arr_delay":0,"location":null}"#
        );
        assert_eq!(FUNCTION.event_types(), ["Flight"]);
    }

    #[test]
    fn folds_flights() {
        let state = FUNCTION.init_json().unwrap();
        let state = handle(ROW, &state).unwrap();
        assert_eq!(
            state,
            r#"{"flights":1,"cancelled":0,"distance":1400,"air_time":227,"arr_delay":11,"location":"IAH"}"#
        );
        let state = handle(CANCELLED, &state).unwrap();
        assert_eq!(
            state,
            r#"{"flights":1,"cancelled":1,"distance":1400,"air_time":227,"arr_delay":11,"location":"IAH"}"#
        );
        // Departed but did not arrive: counts, adds its distance, keeps the location.
        let state = handle(DIVERTED, &state).unwrap();
        assert_eq!(
            state,
            r#"{"flights":2,"cancelled":1,"distance":2725,"air_time":227,"arr_delay":11,"location":"IAH"}"#
        );
    }

    #[test]
    fn flights_tell_their_airports_departure_first() {
        assert_eq!(
            emits(ROW),
            [
                emitted("EWR", "Departure", r#"{"dep_delay":2}"#),
                emitted("IAH", "Arrival", r#"{"arr_delay":11}"#),
            ]
        );
    }

    #[test]
    fn cancelled_flights_emit_nothing() {
        assert_eq!(emits(CANCELLED), []);
    }

    #[test]
    fn diverted_flights_only_depart() {
        assert_eq!(emits(DIVERTED), [emitted("EWR", "Departure", r#"{"dep_delay":46}"#)]);
    }

    #[test]
    fn unknown_delays_are_null_and_unknown_airports_are_skipped() {
        let row = ROW.replace(r#""dep_delay":2"#, r#""dep_delay":null"#);
        let row = row.replace(r#""arr_delay":11"#, r#""arr_delay":null"#);
        assert_eq!(
            emits(&row),
            [
                emitted("EWR", "Departure", r#"{"dep_delay":null}"#),
                emitted("IAH", "Arrival", r#"{"arr_delay":null}"#),
            ]
        );
        let row = ROW.replace(r#""EWR""#, "null");
        assert_eq!(emits(&row), [emitted("IAH", "Arrival", r#"{"arr_delay":11}"#)]);
        let row = ROW.replace(r#""IAH""#, r#""""#);
        assert_eq!(emits(&row), [emitted("EWR", "Departure", r#"{"dep_delay":2}"#)]);
    }

    #[test]
    fn numeric_strings_are_accepted() {
        let state = FUNCTION.init_json().unwrap();
        let state = handle(&ROW.replace(r#""IAH""#, "747"), &state).unwrap();
        assert!(state.ends_with(r#""location":"747"}"#), "{state}");
        let error = handle(&ROW.replace(r#""IAH""#, "[]"), &state).unwrap_err();
        assert!(matches!(error, HandlerError::InvalidEvent(_)), "{error:?}");
    }

    #[test]
    fn fractional_numbers_are_invalid() {
        let state = FUNCTION.init_json().unwrap();
        let error = handle(&ROW.replace("1400", "1400.5"), &state).unwrap_err();
        let HandlerError::InvalidEvent(message) = error else { panic!("{error:?}") };
        assert!(message.contains("whole number"), "{message}");
    }
}
