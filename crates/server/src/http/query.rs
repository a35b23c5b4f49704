//! `GET /metrics/{name}` (raw values) and `GET /metrics/{name}/aggregate`.
//!
//! Common parameters: `start`, `end` (RFC 3339 or Unix seconds, inclusive; default: all
//! stored data), `label.<name>=<value>` filters, `field` (default `value`). An unknown
//! metric is `404`.
//!
//! `GET /metrics/{name}` also takes `limit` (default 1000, max 100 000), `offset`
//! (default 0) and `with_timestamps` (default false). Reply:
//! `{"metric_name", "values": [v, …], "timestamp", "total"}` — values of every selected
//! series in time order (ties by series), paged by `offset`/`limit`; with
//! `with_timestamps=true` each value is a `[timestamp, v]` pair, the timestamp RFC 3339
//! UTC (nanosecond precision as needed). `timestamp` is the RFC 3339 time of the newest
//! returned value (now when none is returned); `total` counts the values matching before
//! paging. A NaN value is `null`.
//!
//! `GET /metrics/{name}/aggregate` also takes `quantiles` (comma-separated, each in
//! `0..=1`, reported as `"quantiles": {"0.95": v}`) and `step` (a duration: `30s`, `1m`,
//! `1h30m`, or seconds `60`, `0.5`), which adds per-bucket results. Reply:
//! `{"metric_name", "count", "sum", "mean", "min", "max", "p50", "p90", "p99",
//! "timestamp"[, "quantiles"][, "steps": [{"timestamp", "count", …}]]}` — NaN values are
//! skipped; `mean`, `min`, `max` and quantiles are `null` when `count` is 0; `timestamp`
//! is the time the aggregate was computed (RFC 3339); each step's `timestamp` is the
//! start of its bucket, ascending; empty buckets are omitted.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use datanexus_model::time;
use datanexus_store::{AggregateQuery, QueryResult, SeriesQuery, Summary};
use serde_json::{Map, Value, json};

use crate::exposition::value_string;
use crate::http::params::Params;
use crate::{AppState, Error, Result};

/// Default `limit` of `GET /metrics/{name}`.
pub(crate) const DEFAULT_VALUES: usize = 1000;
/// Largest `limit` of `GET /metrics/{name}`.
pub(crate) const MAX_VALUES: usize = 100_000;
/// Quantiles every aggregate reports (`p50`, `p90`, `p99`).
const STANDARD_QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")];

/// The metric name of the path.
pub(crate) fn metric_name(path: Result<Path<String>, PathRejection>) -> Result<String> {
    path.map(|Path(name)| name).map_err(|e| {
        Error::Invalid(format!(
            "invalid metric name in the path: {}",
            e.body_text()
        ))
    })
}

/// Handles `GET /metrics/{name}`.
pub(crate) async fn values(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    let name = metric_name(path)?;
    let (query, with_timestamps) = series_query(&name, params?)?;
    let result = state.store()?.query(&query).await?;
    Ok(Json(values_json(
        &name,
        &result,
        with_timestamps,
        time::now_ns(),
    )))
}

/// Parses the parameters of `GET /metrics/{name}`.
fn series_query(name: &str, mut params: Params) -> Result<(SeriesQuery, bool)> {
    let query = SeriesQuery {
        selector: params.selector(name)?,
        range: params.range("start", "end")?,
        limit: params.count("limit", DEFAULT_VALUES, MAX_VALUES)?,
        offset: params.count("offset", 0, usize::MAX)?,
    };
    let with_timestamps = params.flag("with_timestamps")?;
    params.finish()?;
    Ok((query, with_timestamps))
}

fn values_json(name: &str, result: &QueryResult, with_timestamps: bool, now_ns: i64) -> Value {
    let values: Vec<Value> = result
        .samples
        .iter()
        .map(|(_, s)| {
            if with_timestamps {
                json!([time::format_rfc3339(s.timestamp_ns), s.value])
            } else {
                json!(s.value)
            }
        })
        .collect();
    let newest = result
        .samples
        .iter()
        .map(|(_, s)| s.timestamp_ns)
        .max()
        .unwrap_or(now_ns);
    json!({
        "metric_name": name,
        "values": values,
        "timestamp": time::format_rfc3339(newest),
        "total": result.total,
    })
}

/// Handles `GET /metrics/{name}/aggregate`.
pub(crate) async fn aggregate(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    let name = metric_name(path)?;
    let (query, extra) = aggregate_query(&name, params?)?;
    let result = state.store()?.aggregate(&query).await?;
    let mut body = summary_json(&result.total, &extra);
    body.insert("metric_name".into(), json!(name));
    body.insert(
        "timestamp".into(),
        json!(time::format_rfc3339(time::now_ns())),
    );
    if query.step_ns.is_some() {
        let steps: Vec<Value> = result
            .steps
            .iter()
            .map(|(start_ns, summary)| {
                let mut step = summary_json(summary, &extra);
                step.insert("timestamp".into(), json!(time::format_rfc3339(*start_ns)));
                Value::Object(step)
            })
            .collect();
        body.insert("steps".into(), Value::Array(steps));
    }
    Ok(Json(Value::Object(body)))
}

/// Parses the parameters of `GET /metrics/{name}/aggregate`; returns the query (whose
/// quantiles are the standard ones, then the extra ones) and the extra quantiles.
fn aggregate_query(name: &str, mut params: Params) -> Result<(AggregateQuery, Vec<f64>)> {
    let selector = params.selector(name)?;
    let range = params.range("start", "end")?;
    let extra = match params.string("quantiles")? {
        Some(text) => parse_quantiles(&text)?,
        None => Vec::new(),
    };
    let step_ns = match params.string("step")? {
        Some(text) => Some(parse_step(&text)?),
        None => None,
    };
    params.finish()?;
    let quantiles = STANDARD_QUANTILES
        .iter()
        .map(|(q, _)| *q)
        .chain(extra.iter().copied())
        .collect();
    let query = AggregateQuery {
        selector,
        range,
        step_ns,
        quantiles,
        buckets: Vec::new(),
    };
    Ok((query, extra))
}

/// `0.5,0.95` → `[0.5, 0.95]`, each in `0..=1`.
fn parse_quantiles(text: &str) -> Result<Vec<f64>> {
    let bad =
        |reason: &str| Error::Invalid(format!("invalid parameter quantiles={text:?}: {reason}"));
    text.split(',')
        .map(|part| {
            let q: f64 = part
                .trim()
                .parse()
                .map_err(|_| bad(&format!("{:?} is not a number", part.trim())))?;
            if (0.0..=1.0).contains(&q) {
                Ok(q)
            } else {
                Err(bad(&format!("{q} is outside 0..=1")))
            }
        })
        .collect()
}

/// A step: a humantime duration (`1m`, `1h30m`, `500ms`) or seconds (`60`, `0.5`), in ns.
fn parse_step(text: &str) -> Result<i64> {
    let bad = |reason: &str| Error::Invalid(format!("invalid parameter step={text:?}: {reason}"));
    let trimmed = text.trim();
    let duration = match trimmed.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => Duration::from_secs_f64(secs),
        Ok(_) => return Err(bad("expected a positive number of seconds")),
        Err(_) => humantime::parse_duration(trimmed)
            .map_err(|e| bad(&format!("expected a duration like 30s, 1m or 60 ({e})")))?,
    };
    match i64::try_from(duration.as_nanos()) {
        Ok(ns) if ns > 0 => Ok(ns),
        Ok(_) => Err(bad("the step must be longer than 0")),
        Err(_) => Err(bad("the step is too long")),
    }
}

/// `count`, `sum`, `mean`, `min`, `max`, `p50`, `p90`, `p99` and the extra quantiles of
/// `s` (whose quantiles are the standard ones, then `extra`).
fn summary_json(s: &Summary, extra: &[f64]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("count".into(), json!(s.count));
    m.insert("sum".into(), json!(s.sum));
    m.insert("mean".into(), json!(s.mean));
    m.insert("min".into(), json!(s.min));
    m.insert("max".into(), json!(s.max));
    let value = |i: usize| s.quantiles.get(i).and_then(|(_, v)| *v);
    for (i, (_, key)) in STANDARD_QUANTILES.iter().enumerate() {
        m.insert((*key).into(), json!(value(i)));
    }
    if !extra.is_empty() {
        let extras: Map<String, Value> = extra
            .iter()
            .enumerate()
            .map(|(i, q)| (value_string(*q), json!(value(STANDARD_QUANTILES.len() + i))))
            .collect();
        m.insert("quantiles".into(), Value::Object(extras));
    }
    m
}

#[cfg(test)]
mod tests {
    use datanexus_model::Labels;
    use datanexus_store::{Sample, SeriesKey};

    use super::*;

    fn params(query: &[(&str, &str)]) -> Params {
        Params::from_pairs(query)
    }

    #[test]
    fn series_parameters_have_defaults_and_limits() {
        let (q, with_ts) = series_query("cpu", params(&[])).unwrap();
        assert_eq!((q.limit, q.offset, with_ts), (DEFAULT_VALUES, 0, false));
        let (q, with_ts) = series_query(
            "cpu",
            params(&[
                ("limit", "5"),
                ("offset", "2"),
                ("with_timestamps", "true"),
                ("label.host", "a"),
            ]),
        )
        .unwrap();
        assert_eq!((q.limit, q.offset, with_ts), (5, 2, true));
        assert_eq!(q.selector.matchers, [("host".to_owned(), "a".to_owned())]);
        let e = series_query("cpu", params(&[("limit", "100001")])).unwrap_err();
        assert!(e.to_string().contains("limit=\"100001\""), "{e}");
        let e = series_query("cpu", params(&[("step", "1m")])).unwrap_err();
        assert!(e.to_string().contains("unknown parameter"), "{e}");
    }

    #[test]
    fn values_are_plain_or_timestamped_and_nan_is_null() {
        let result = QueryResult {
            samples: vec![
                (
                    0,
                    Sample {
                        timestamp_ns: 1_000_000_000,
                        value: 1.5,
                    },
                ),
                (
                    0,
                    Sample {
                        timestamp_ns: 2_000_000_000,
                        value: f64::NAN,
                    },
                ),
            ],
            series: vec![SeriesKey {
                measurement: "cpu".into(),
                field: "value".into(),
                labels: Labels::empty(),
            }],
            total: 7,
        };
        let plain = values_json("cpu", &result, false, 0);
        assert_eq!(
            plain,
            json!({"metric_name": "cpu", "values": [1.5, null],
                   "timestamp": "1970-01-01T00:00:02Z", "total": 7})
        );
        let pairs = values_json("cpu", &result, true, 0);
        assert_eq!(
            pairs["values"],
            json!([
                ["1970-01-01T00:00:01Z", 1.5],
                ["1970-01-01T00:00:02Z", null]
            ])
        );
        let empty = values_json("cpu", &QueryResult::default(), false, 3_000_000_000);
        assert_eq!(empty["timestamp"], "1970-01-01T00:00:03Z");
    }

    #[test]
    fn steps_accept_durations_and_seconds() {
        assert_eq!(parse_step("1m").unwrap(), 60_000_000_000);
        assert_eq!(parse_step("1h30m").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_step("60").unwrap(), 60_000_000_000);
        assert_eq!(parse_step("0.5").unwrap(), 500_000_000);
        for bad in ["0", "-1", "soon", "0s", "NaN"] {
            let e = parse_step(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("invalid parameter step={bad:?}")),
                "{e}"
            );
        }
    }

    #[test]
    fn quantiles_must_be_numbers_between_zero_and_one() {
        assert_eq!(parse_quantiles("0.5, 0.95").unwrap(), [0.5, 0.95]);
        let e = parse_quantiles("0.5,1.5").unwrap_err().to_string();
        assert!(
            e.contains("quantiles=\"0.5,1.5\"") && e.contains("1.5 is outside"),
            "{e}"
        );
        assert!(parse_quantiles("p99").is_err());
        let (q, extra) = aggregate_query("cpu", params(&[("quantiles", "0.95")])).unwrap();
        assert_eq!(q.quantiles, [0.5, 0.9, 0.99, 0.95]);
        assert_eq!(extra, [0.95]);
    }

    #[test]
    fn summaries_report_standard_and_extra_quantiles_and_null_when_empty() {
        let s = Summary {
            count: 4,
            sum: 10.0,
            mean: Some(2.5),
            min: Some(1.0),
            max: Some(4.0),
            quantiles: vec![
                (0.5, Some(2.5)),
                (0.9, Some(3.7)),
                (0.99, Some(3.97)),
                (0.95, Some(3.85)),
            ],
            buckets: Vec::new(),
        };
        let m = Value::Object(summary_json(&s, &[0.95]));
        assert_eq!(
            m,
            json!({"count": 4, "sum": 10.0, "mean": 2.5, "min": 1.0, "max": 4.0,
                   "p50": 2.5, "p90": 3.7, "p99": 3.97, "quantiles": {"0.95": 3.85}})
        );
        let empty = Value::Object(summary_json(&Summary::default(), &[]));
        assert_eq!(
            empty,
            json!({"count": 0, "sum": 0.0, "mean": null, "min": null, "max": null,
                   "p50": null, "p90": null, "p99": null})
        );
    }
}
