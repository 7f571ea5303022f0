//! Durations as people write them: `"10m"`, `"1h 30m"`, `"90s"`, `"500ms"`, ISO 8601's
//! `"PT10M"`, or a bare number of milliseconds (the unit of every duration in tollgate's
//! records). Parsing is jiff's "friendly" format; printing is the same format, so what a spec
//! says comes back as written.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Why a text is not a duration tollgate accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{}` is not a duration: {reason} (write it as `10m`, `1h 30m`, `90s` or `500ms`)", crate::id::quoted(.text))]
pub struct DurationError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a duration as people write it: units `h`, `m`, `s`, `ms` (and their long names,
/// `2 hours`), combined (`1h 30m`), fractional (`1.5h`), or ISO 8601 (`PT1H30M`). Negative
/// durations, calendar units (days, which are not always 24 hours) and parts of a millisecond
/// are refused.
///
/// ```
/// use std::time::Duration;
/// use tollgate::time::parse_duration;
///
/// assert_eq!(parse_duration("1h 30m")?, Duration::from_secs(90 * 60));
/// assert_eq!(parse_duration("10m")?, Duration::from_secs(600));
/// assert_eq!(parse_duration("250ms")?, Duration::from_millis(250));
/// assert!(parse_duration("soon").is_err());
/// # Ok::<(), tollgate::time::DurationError>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let error = |reason: String| DurationError {
        text: text.to_owned(),
        reason,
    };
    let signed: jiff::SignedDuration = text.trim().parse().map_err(|e: jiff::Error| {
        // jiff's message starts with what it tried ("failed to parse input in the
        // \"friendly\" duration format: "); the part after the last colon says why.
        let message = e.to_string();
        error(message.rsplit(": ").next().unwrap_or(&message).to_owned())
    })?;
    let duration = Duration::try_from(signed).map_err(|_| error("it is negative".into()))?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(error("it has a part of a millisecond".into()));
    }
    Ok(duration)
}

/// Writes `duration` the way [`parse_duration`] reads it (`1h 30m`, `0s`).
///
/// ```
/// use std::time::Duration;
/// use tollgate::time::{format_duration, parse_duration};
///
/// assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
/// let d = Duration::from_millis(3_723_004);
/// assert_eq!(parse_duration(&format_duration(d))?, d);
/// # Ok::<(), tollgate::time::DurationError>(())
/// ```
#[must_use]
pub fn format_duration(duration: Duration) -> String {
    match jiff::SignedDuration::try_from(duration) {
        Ok(signed) => format!("{signed:#}"),
        // Past i64 seconds (about 292 billion years); milliseconds still say it exactly.
        Err(_) => format!("{}ms", super::duration_millis(duration)),
    }
}

/// Reads a duration given as milliseconds (a number) or as text ([`parse_duration`]).
pub(crate) fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

/// A duration read by [`deserialize_duration`], for `Option`s of it.
pub(crate) struct DurationText(pub(crate) Duration);

impl<'de> serde::Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_duration(d).map(DurationText)
    }
}

/// Reads an optional duration (`null` is `None`) as [`deserialize_duration`] does.
pub(crate) fn deserialize_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    Ok(<Option<DurationText> as serde::Deserialize>::deserialize(d)?.map(|t| t.0))
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: milliseconds, or text such as `10m` or `1h 30m`")
    }

    fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(ms))
    }

    fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
        u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(ms), &self))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_duration(text).map_err(E::custom)
    }
}

/// Serde for a `Duration` written as people write it (`"1h 30m"`), read from that or from
/// milliseconds: `#[serde(with = "crate::time::human")]`.
pub(crate) mod human {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::deserialize_duration(d)
    }
}

/// [`human`] for an `Option<Duration>`.
pub(crate) mod opt_human {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<_>`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize_opt_duration(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_and_iso_forms_parse_to_the_same_duration() {
        for (text, secs) in [
            ("10m", 600),
            ("1h 30m", 5400),
            ("1h30m", 5400),
            ("PT1H30M", 5400),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn negative_calendar_and_sub_millisecond_durations_are_refused_by_name() {
        for (text, why) in [
            ("-5m", "negative"),
            ("1d", "days"),
            ("1ms 500us", "millisecond"),
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
            assert_eq!(e.text, text);
        }
    }
}
