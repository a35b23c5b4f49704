//! Points: the Influx line-protocol model. A plain metric sample is a point with one
//! field named `value`.

use crate::metric::MetricType;
use crate::{Error, Result};

/// The field name of a plain metric sample.
pub const VALUE_FIELD: &str = "value";

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A float (the default numeric type).
    F64(f64),
    /// A signed integer (`i` suffix in line protocol).
    I64(i64),
    /// An unsigned integer (`u` suffix in line protocol).
    U64(u64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
}

impl FieldValue {
    /// The value as a float, if it is numeric (booleans count as 0/1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::F64(v) => Some(*v),
            FieldValue::I64(v) => Some(*v as f64),
            FieldValue::U64(v) => Some(*v as f64),
            FieldValue::Bool(v) => Some(f64::from(u8::from(*v))),
            FieldValue::Str(_) => None,
        }
    }
}

/// Labels of a series: sorted by name, names unique. Serialized as a list of
/// `[name, value]` pairs; deserializing sorts them and refuses a name given twice.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    Default,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(try_from = "Vec<(String, String)>")]
pub struct Labels(Vec<(String, String)>);

impl TryFrom<Vec<(String, String)>> for Labels {
    type Error = Error;

    fn try_from(pairs: Vec<(String, String)>) -> Result<Self> {
        Labels::new(pairs)
    }
}

impl Labels {
    /// No labels.
    pub fn empty() -> Self {
        Labels(Vec::new())
    }

    /// Builds labels from pairs in any order.
    ///
    /// # Errors
    /// [`Error::DuplicateLabel`] when a name occurs twice.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut v: Vec<(String, String)> = pairs.into_iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = v.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::DuplicateLabel(w[0].0.clone()));
        }
        Ok(Labels(v))
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of label `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sorted pairs.
    pub fn into_inner(self) -> Vec<(String, String)> {
        self.0
    }
}

/// One point: a measurement at one instant with one or more fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Metric (measurement) name.
    pub measurement: String,
    /// Labels (Influx tags).
    pub labels: Labels,
    /// Fields, names unique.
    pub fields: Vec<(String, FieldValue)>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Metric type of the family.
    pub kind: MetricType,
    /// Help text, if the client sent one.
    pub help: Option<String>,
}

impl Point {
    /// A plain metric sample: one field `value`.
    pub fn sample(
        measurement: impl Into<String>,
        labels: Labels,
        value: f64,
        timestamp_ns: i64,
    ) -> Self {
        Point {
            measurement: measurement.into(),
            labels,
            fields: vec![(VALUE_FIELD.to_owned(), FieldValue::F64(value))],
            timestamp_ns,
            kind: MetricType::Untyped,
            help: None,
        }
    }

    /// Sets the metric type.
    #[must_use]
    pub fn with_kind(mut self, kind: MetricType) -> Self {
        self.kind = kind;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_searchable() {
        let l = Labels::new([("b".into(), "2".into()), ("a".into(), "1".into())]).unwrap();
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
        assert_eq!(l.get("b"), Some("2"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn duplicate_label_names_are_rejected() {
        let err = Labels::new([("a".into(), "1".into()), ("a".into(), "2".into())]).unwrap_err();
        assert_eq!(err, Error::DuplicateLabel("a".into()));
    }
}
