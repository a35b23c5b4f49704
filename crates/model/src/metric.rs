//! Metric types, as named by the `type` string of `data_nexus.Metric`.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The kind of a metric family, which decides how it is exposed and aggregated.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// A monotonically increasing total.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations bucketed by configured bounds, exposed as `_bucket`/`_sum`/`_count`.
    Histogram,
    /// Observations summarised by quantiles.
    Summary,
    /// No type given (the default when the type string is empty).
    #[default]
    Untyped,
}

impl MetricType {
    /// The lowercase name used in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }

    /// Parses the seed's type string: case-insensitive, surrounding whitespace ignored,
    /// empty means [`MetricType::Untyped`].
    ///
    /// # Errors
    /// [`Error::UnknownMetricType`] for any other string.
    pub fn parse_lenient(s: &str) -> Result<Self, Error> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Ok(MetricType::Untyped);
        }
        match trimmed.to_ascii_lowercase().as_str() {
            "counter" => Ok(MetricType::Counter),
            "gauge" => Ok(MetricType::Gauge),
            "histogram" => Ok(MetricType::Histogram),
            "summary" => Ok(MetricType::Summary),
            "untyped" | "unknown" => Ok(MetricType::Untyped),
            _ => Err(Error::UnknownMetricType(s.to_owned())),
        }
    }
}

impl FromStr for MetricType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse_lenient(s)
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_case_insensitively() {
        assert_eq!("COUNTER".parse::<MetricType>(), Ok(MetricType::Counter));
        assert_eq!(" Gauge ".parse::<MetricType>(), Ok(MetricType::Gauge));
        assert_eq!("histogram".parse::<MetricType>(), Ok(MetricType::Histogram));
        assert_eq!("Summary".parse::<MetricType>(), Ok(MetricType::Summary));
        assert_eq!("".parse::<MetricType>(), Ok(MetricType::Untyped));
    }

    #[test]
    fn rejects_unknown_type_naming_it() {
        let err = "countr".parse::<MetricType>().unwrap_err();
        assert_eq!(err, Error::UnknownMetricType("countr".into()));
        assert!(err.to_string().contains("\"countr\""));
    }
}
