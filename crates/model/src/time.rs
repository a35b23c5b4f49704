//! Timestamps: parsing (RFC 3339 or Unix seconds) and the clock.
//!
//! Units: internally every timestamp is nanoseconds since the Unix epoch (`i64`, which
//! covers 1677-09-21 to 2262-04-11). `data_nexus.Metric.timestamp` is Unix seconds;
//! `raftmetrics.v1.MetricEntry.timestamp` is a `google.protobuf.Timestamp`; HTTP
//! accepts RFC 3339 strings or Unix seconds (integer or fractional).

use chrono::{DateTime, SecondsFormat, Utc};

use crate::{Error, Result};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Unix seconds to nanoseconds.
///
/// # Errors
/// [`Error::InvalidTimestamp`] outside the representable range or before the epoch.
pub fn from_unix_seconds(secs: i64) -> Result<i64> {
    if secs < 0 {
        return Err(Error::InvalidTimestamp {
            value: secs.to_string(),
            reason: "before 1970-01-01",
        });
    }
    secs.checked_mul(NANOS_PER_SEC)
        .ok_or_else(|| Error::InvalidTimestamp {
            value: secs.to_string(),
            reason: "after 2262-04-11",
        })
}

/// Fractional Unix seconds to nanoseconds.
///
/// # Errors
/// [`Error::InvalidTimestamp`] for non-finite, negative or too large values.
pub fn from_unix_seconds_f64(secs: f64) -> Result<i64> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(Error::InvalidTimestamp {
            value: secs.to_string(),
            reason: "not a non-negative finite number",
        });
    }
    let ns = (secs * 1e9).round();
    if ns >= i64::MAX as f64 {
        return Err(Error::InvalidTimestamp {
            value: secs.to_string(),
            reason: "after 2262-04-11",
        });
    }
    Ok(ns as i64)
}

/// A protobuf `Timestamp` (seconds + nanos) to nanoseconds.
///
/// # Errors
/// [`Error::InvalidTimestamp`] when out of range or `nanos` is not in `0..1e9`.
pub fn from_seconds_nanos(seconds: i64, nanos: i32) -> Result<i64> {
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(Error::InvalidTimestamp {
            value: format!("{seconds}s {nanos}ns"),
            reason: "nanos must be in 0..1e9",
        });
    }
    from_unix_seconds(seconds)?
        .checked_add(i64::from(nanos))
        .ok_or_else(|| Error::InvalidTimestamp {
            value: seconds.to_string(),
            reason: "after 2262-04-11",
        })
}

/// Parses RFC 3339 (`2025-04-11T12:00:00Z`, any offset) or Unix seconds (`1712836800`,
/// `1712836800.5`).
///
/// # Errors
/// [`Error::InvalidTimestamp`] naming the value.
pub fn parse(text: &str) -> Result<i64> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Error::InvalidTimestamp {
            value: text.to_owned(),
            reason: "empty",
        });
    }
    if let Ok(secs) = t.parse::<i64>() {
        return from_unix_seconds(secs);
    }
    if let Ok(secs) = t.parse::<f64>() {
        return from_unix_seconds_f64(secs);
    }
    let dt = DateTime::parse_from_rfc3339(t).map_err(|_| Error::InvalidTimestamp {
        value: text.to_owned(),
        reason: "expected RFC 3339 or Unix seconds",
    })?;
    dt.timestamp_nanos_opt()
        .filter(|ns| *ns >= 0)
        .ok_or_else(|| Error::InvalidTimestamp {
            value: text.to_owned(),
            reason: "outside 1970-01-01..2262-04-11",
        })
}

/// Formats nanoseconds as RFC 3339 UTC with the precision needed (e.g. `…T12:00:00.5Z`).
pub fn format_rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_unix_seconds() {
        assert_eq!(parse("1970-01-01T00:00:01Z"), Ok(NANOS_PER_SEC));
        assert_eq!(parse("1970-01-01T01:00:01+01:00"), Ok(NANOS_PER_SEC));
        assert_eq!(parse("1712836800"), Ok(1_712_836_800 * NANOS_PER_SEC));
        assert_eq!(parse("1.5"), Ok(1_500_000_000));
    }

    #[test]
    fn rejects_garbage_and_negative_times() {
        assert!(parse("yesterday").is_err());
        assert!(parse("-5").is_err());
        assert!(parse("").is_err());
        assert!(parse("1969-12-31T23:59:59Z").is_err());
        assert!(from_unix_seconds(i64::MAX).is_err());
        assert!(from_seconds_nanos(1, 1_000_000_000).is_err());
    }

    #[test]
    fn formats_round_trip() {
        let ns = 1_712_836_800_500_000_000;
        assert_eq!(format_rfc3339(ns), "2024-04-11T12:00:00.500Z");
        assert_eq!(parse(&format_rfc3339(ns)), Ok(ns));
    }
}
