//! Validation rules for incoming points.
//!
//! - Metric names follow Prometheus: `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most
//!   [`Limits::max_name_bytes`].
//! - Label names: `[a-zA-Z_][a-zA-Z0-9_]*`; names starting with `__` are reserved and
//!   rejected. At most [`Limits::max_labels`] labels, values at most
//!   [`Limits::max_label_value_bytes`] bytes (any UTF-8).
//! - Values: finite numbers and NaN are accepted (NaN is a legal Prometheus sample value,
//!   used for "no data"; aggregates skip it). `+Inf`/`-Inf` are rejected: they make every
//!   sum and mean over the series meaningless.

use crate::point::{FieldValue, Labels, Point};
use crate::{Error, Result};

/// Size limits applied to every point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most labels per series.
    pub max_labels: usize,
    /// Longest label value, in bytes.
    pub max_label_value_bytes: usize,
    /// Longest metric or label name, in bytes.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_labels: 32,
            max_label_value_bytes: 2048,
            max_name_bytes: 256,
        }
    }
}

/// Checks a metric (measurement) name.
///
/// # Errors
/// [`Error::InvalidMetricName`] naming the offending name.
pub fn metric_name(name: &str, limits: &Limits) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidMetricName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.bytes().next() else {
        return bad("empty");
    };
    if name.len() > limits.max_name_bytes {
        return bad("too long");
    }
    if !(first.is_ascii_alphabetic() || first == b'_' || first == b':') {
        return bad("must start with a letter, '_' or ':'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    {
        return bad("only letters, digits, '_' and ':' are allowed");
    }
    Ok(())
}

/// Checks a label name.
///
/// # Errors
/// [`Error::InvalidLabelName`] naming the offending name.
pub fn label_name(name: &str, limits: &Limits) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidLabelName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.bytes().next() else {
        return bad("empty");
    };
    if name.len() > limits.max_name_bytes {
        return bad("too long");
    }
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return bad("must start with a letter or '_'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return bad("only letters, digits and '_' are allowed");
    }
    if name.starts_with("__") {
        return bad("names starting with '__' are reserved");
    }
    Ok(())
}

/// Checks every label of a series.
///
/// # Errors
/// The first broken rule, naming the label.
pub fn labels(labels: &Labels, limits: &Limits) -> Result<()> {
    if labels.len() > limits.max_labels {
        return Err(Error::TooManyLabels {
            count: labels.len(),
            max: limits.max_labels,
        });
    }
    for (name, value) in labels.iter() {
        label_name(name, limits)?;
        if value.len() > limits.max_label_value_bytes {
            return Err(Error::LabelValueTooLong {
                name: name.to_owned(),
                len: value.len(),
                max: limits.max_label_value_bytes,
            });
        }
    }
    Ok(())
}

/// Checks a sample value: finite or NaN.
///
/// # Errors
/// [`Error::NonFiniteValue`] for ±Inf.
pub fn value(name: &str, v: f64) -> Result<()> {
    if v.is_infinite() {
        return Err(Error::NonFiniteValue {
            name: name.to_owned(),
            value: v,
        });
    }
    Ok(())
}

/// Checks a whole point: name, labels, fields (at least one, unique names, values).
///
/// # Errors
/// The first broken rule.
pub fn point(p: &Point, limits: &Limits) -> Result<()> {
    metric_name(&p.measurement, limits)?;
    labels(&p.labels, limits)?;
    if p.fields.is_empty() {
        return Err(Error::NoFields(p.measurement.clone()));
    }
    for (i, (name, v)) in p.fields.iter().enumerate() {
        if name.is_empty() || name.len() > limits.max_name_bytes {
            return Err(Error::InvalidLabelName {
                name: name.clone(),
                reason: "field names must be 1..=max_name_bytes bytes",
            });
        }
        if p.fields[..i].iter().any(|(n, _)| n == name) {
            return Err(Error::DuplicateField(name.clone()));
        }
        if let FieldValue::F64(f) = v {
            value(&p.measurement, *f)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    #[test]
    fn accepts_prometheus_legal_names() {
        for n in ["cpu", "http_requests_total", ":ratio", "a:b_c9", "_x"] {
            assert_eq!(metric_name(n, &lim()), Ok(()), "{n}");
        }
    }

    #[test]
    fn rejects_illegal_metric_names_with_reason() {
        for n in ["", "9lives", "cpu-usage", "cpu usage", "ü", "a.b"] {
            let e = metric_name(n, &lim()).unwrap_err();
            assert!(e.to_string().contains(&format!("{n:?}")), "{e}");
        }
        assert!(metric_name(&"a".repeat(257), &lim()).is_err());
    }

    #[test]
    fn rejects_reserved_and_illegal_label_names() {
        assert!(label_name("__name__", &lim()).is_err());
        assert!(label_name("a:b", &lim()).is_err());
        assert!(label_name("1a", &lim()).is_err());
        assert_eq!(label_name("host", &lim()), Ok(()));
    }

    #[test]
    fn enforces_label_count_and_value_length() {
        let many = Labels::new((0..33).map(|i| (format!("l{i}"), "v".into()))).unwrap();
        assert_eq!(
            labels(&many, &lim()),
            Err(Error::TooManyLabels { count: 33, max: 32 })
        );
        let long = Labels::new([("k".into(), "x".repeat(2049))]).unwrap();
        assert!(matches!(
            labels(&long, &lim()),
            Err(Error::LabelValueTooLong { len: 2049, .. })
        ));
    }

    #[test]
    fn accepts_nan_and_rejects_infinities() {
        assert_eq!(value("m", f64::NAN), Ok(()));
        assert_eq!(value("m", -0.0), Ok(()));
        assert!(value("m", f64::INFINITY).is_err());
        assert!(value("m", f64::NEG_INFINITY).is_err());
    }

    #[test]
    fn rejects_points_without_fields_or_with_duplicates() {
        let mut p = Point::sample("m", Labels::empty(), 1.0, 0);
        assert_eq!(point(&p, &lim()), Ok(()));
        p.fields.push(("value".into(), FieldValue::I64(1)));
        assert_eq!(
            point(&p, &lim()),
            Err(Error::DuplicateField("value".into()))
        );
        p.fields.clear();
        assert_eq!(point(&p, &lim()), Err(Error::NoFields("m".into())));
    }
}
