//! Query-string parameters of the read endpoints, with our error shape: every problem is
//! a `400 {"error": "invalid parameter <name>=\"<value>\": <reason>"}`; unknown and
//! repeated parameters are rejected too (so a typo is an error, not a silently ignored
//! filter).
//!
//! Shared rules:
//! - timestamps are RFC 3339 or Unix seconds (integer or fractional); ranges are
//!   inclusive at both ends;
//! - `label.<name>=<value>` selects series whose label `<name>` equals `<value>`
//!   (repeatable for different names);
//! - `field` picks the field (default `value`).

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use datanexus_model::{point::VALUE_FIELD, time};
use datanexus_store::{Selector, TimeRange};

use crate::{Error, Result};

/// Prefix of label-matcher parameters.
const LABEL_PREFIX: &str = "label.";

/// The query string as `(name, value)` pairs, each to be taken once.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
    taken: Vec<bool>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| Error::Invalid(format!("invalid query string: {}", e.body_text())))?;
        Ok(Params::new(pairs))
    }
}

fn invalid(name: &str, value: &str, reason: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("invalid parameter {name}={value:?}: {reason}"))
}

impl Params {
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Self {
        let taken = vec![false; pairs.len()];
        Params { pairs, taken }
    }

    /// The value of `name`, if given.
    ///
    /// # Errors
    /// `name` is given more than once.
    pub(crate) fn string(&mut self, name: &str) -> Result<Option<String>> {
        let mut found = None;
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if k == name {
                if found.is_some() {
                    return Err(invalid(name, v, "the parameter is given more than once"));
                }
                found = Some(i);
            }
        }
        Ok(found.and_then(|i| {
            *self.taken.get_mut(i)? = true;
            self.pairs.get(i).map(|(_, v)| v.clone())
        }))
    }

    /// A timestamp parameter (RFC 3339 or Unix seconds), in ns.
    pub(crate) fn timestamp(&mut self, name: &str) -> Result<Option<i64>> {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        time::parse(&text).map(Some).map_err(|e| match e {
            datanexus_model::Error::InvalidTimestamp { reason, .. } => invalid(name, &text, reason),
            other => invalid(name, &text, other),
        })
    }

    /// An inclusive range from two timestamp parameters.
    ///
    /// # Errors
    /// A bad timestamp, or `start` after `end`.
    pub(crate) fn range(&mut self, start: &str, end: &str) -> Result<TimeRange> {
        let range = TimeRange {
            start_ns: self.timestamp(start)?,
            end_ns: self.timestamp(end)?,
        };
        if let (Some(s), Some(e)) = (range.start_ns, range.end_ns)
            && s > e
        {
            return Err(Error::Invalid(format!(
                "invalid time range: {start} ({}) is after {end} ({})",
                time::format_rfc3339(s),
                time::format_rfc3339(e)
            )));
        }
        Ok(range)
    }

    /// A count in `0..=max`, `default` when absent.
    pub(crate) fn count(&mut self, name: &str, default: usize, max: usize) -> Result<usize> {
        let Some(text) = self.string(name)? else {
            return Ok(default);
        };
        let n: usize = text
            .trim()
            .parse()
            .map_err(|_| invalid(name, &text, "expected a non-negative integer"))?;
        if n > max {
            return Err(invalid(name, &text, format_args!("the maximum is {max}")));
        }
        Ok(n)
    }

    /// A boolean (`true`/`false`/`1`/`0`), `false` when absent.
    pub(crate) fn flag(&mut self, name: &str) -> Result<bool> {
        match self.string(name)?.as_deref() {
            None => Ok(false),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(invalid(name, other, "expected true or false")),
        }
    }

    /// The series selector of metric `measurement`: `field` and `label.<name>` matchers.
    pub(crate) fn selector(&mut self, measurement: &str) -> Result<Selector> {
        let field = self
            .string("field")?
            .unwrap_or_else(|| VALUE_FIELD.to_owned());
        if field.is_empty() {
            return Err(invalid("field", "", "must not be empty"));
        }
        let mut matchers: Vec<(String, String)> = Vec::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            let Some(label) = k.strip_prefix(LABEL_PREFIX) else {
                continue;
            };
            if label.is_empty() {
                return Err(invalid(k, v, "expected label.<name>=<value>"));
            }
            if matchers.iter().any(|(name, _)| name == label) {
                return Err(invalid(k, v, "the label is given more than once"));
            }
            matchers.push((label.to_owned(), v.clone()));
            if let Some(t) = self.taken.get_mut(i) {
                *t = true;
            }
        }
        matchers.sort();
        Ok(Selector {
            measurement: measurement.to_owned(),
            field,
            matchers,
        })
    }

    /// Checks every parameter was used.
    ///
    /// # Errors
    /// Names the first unknown parameter.
    pub(crate) fn finish(self) -> Result<()> {
        match self
            .pairs
            .iter()
            .zip(&self.taken)
            .find(|(_, taken)| !**taken)
        {
            Some(((k, v), _)) => Err(invalid(k, v, "unknown parameter")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
impl Params {
    /// Parameters from `(name, value)` pairs, for tests.
    pub(crate) fn from_pairs(query: &[(&str, &str)]) -> Params {
        Params::new(
            query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &[(&str, &str)]) -> Params {
        Params::from_pairs(query)
    }

    #[test]
    fn ranges_accept_rfc3339_and_unix_seconds() {
        let mut p = params(&[("start", "1970-01-01T00:00:01Z"), ("end", "2.5")]);
        let range = p.range("start", "end").unwrap();
        assert_eq!(range.start_ns, Some(1_000_000_000));
        assert_eq!(range.end_ns, Some(2_500_000_000));
        p.finish().unwrap();
        assert_eq!(
            params(&[]).range("start", "end").unwrap(),
            TimeRange::default()
        );
    }

    #[test]
    fn bad_timestamps_name_the_parameter_and_value() {
        let e = params(&[("start", "yesterday")])
            .range("start", "end")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid parameter start=\"yesterday\": "),
            "{e}"
        );
        let e = params(&[("start", "5"), ("end", "4")])
            .range("start", "end")
            .unwrap_err()
            .to_string();
        assert!(e.contains("start") && e.contains("is after end"), "{e}");
    }

    #[test]
    fn counts_have_defaults_and_maxima() {
        assert_eq!(params(&[]).count("limit", 100, 1000).unwrap(), 100);
        assert_eq!(
            params(&[("limit", "0")]).count("limit", 100, 1000).unwrap(),
            0
        );
        let e = params(&[("limit", "1001")])
            .count("limit", 100, 1000)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid parameter limit=\"1001\": the maximum is 1000");
        let e = params(&[("offset", "-1")])
            .count("offset", 0, usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offset=\"-1\""), "{e}");
    }

    #[test]
    fn selectors_collect_label_matchers_and_the_field() {
        let mut p = params(&[("label.host", "a"), ("label.dc", "eu"), ("field", "free")]);
        let s = p.selector("disk").unwrap();
        assert_eq!(s.field, "free");
        assert_eq!(
            s.matchers,
            [
                ("dc".to_owned(), "eu".to_owned()),
                ("host".to_owned(), "a".to_owned())
            ]
        );
        p.finish().unwrap();
        assert_eq!(
            params(&[]).selector("cpu").unwrap(),
            Selector::metric("cpu")
        );
    }

    #[test]
    fn repeated_unknown_and_malformed_parameters_are_rejected() {
        let e = params(&[("label.host", "a"), ("label.host", "b")])
            .selector("cpu")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("label.host=\"b\"") && e.contains("more than once"),
            "{e}"
        );
        let e = params(&[("limit", "1"), ("limit", "2")])
            .count("limit", 1, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than once"), "{e}");
        let e = params(&[("lables.host", "a")])
            .finish()
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid parameter lables.host=\"a\": unknown parameter");
        let e = params(&[("label.", "a")])
            .selector("cpu")
            .unwrap_err()
            .to_string();
        assert!(e.contains("label.<name>"), "{e}");
        let e = params(&[("with_timestamps", "yes")])
            .flag("with_timestamps")
            .unwrap_err()
            .to_string();
        assert!(e.contains("with_timestamps=\"yes\""), "{e}");
    }
}
