//! Errors of the data model: every one is a client's mistake (bad input).

/// What was wrong with a point, event or record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A metric or measurement name breaks the naming rules.
    #[error("invalid metric name {name:?}: {reason}")]
    InvalidMetricName { name: String, reason: &'static str },
    /// A label name breaks the naming rules.
    #[error("invalid label name {name:?}: {reason}")]
    InvalidLabelName { name: String, reason: &'static str },
    /// A label value is too long.
    #[error("label {name:?} value is {len} bytes, the limit is {max}")]
    LabelValueTooLong {
        name: String,
        len: usize,
        max: usize,
    },
    /// Too many labels on one series.
    #[error("{count} labels, the limit is {max}")]
    TooManyLabels { count: usize, max: usize },
    /// The same label name twice.
    #[error("duplicate label name {0:?}")]
    DuplicateLabel(String),
    /// The same field name twice in one point.
    #[error("duplicate field name {0:?}")]
    DuplicateField(String),
    /// A point without fields.
    #[error("point {0:?} has no fields")]
    NoFields(String),
    /// A value that is neither finite nor NaN.
    #[error("value {value} of {name:?} is not finite (only finite numbers and NaN are accepted)")]
    NonFiniteValue { name: String, value: f64 },
    /// An unknown metric type string.
    #[error("unknown metric type {0:?} (expected counter, gauge, histogram, summary or untyped)")]
    UnknownMetricType(String),
    /// A timestamp that cannot be parsed or is out of range.
    #[error("invalid timestamp {value:?}: {reason}")]
    InvalidTimestamp { value: String, reason: &'static str },
    /// An event that is not well formed.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// A topic record that cannot be decoded.
    #[error("undecodable record: {0}")]
    Decode(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
