//! `GET /metrics` (the ingested metrics) and `GET /internal/metrics` (the program's own
//! metrics, `Telemetry::encode` converted from OpenMetrics), both Prometheus text format
//! 0.0.4 (`Content-Type: text/plain; version=0.0.4; charset=utf-8`).
//!
//! `GET /metrics` renders the latest sample of every stored series, histogram- and
//! summary-typed families from all their stored observations (see `exposition.rs` for
//! the rendering rules). `GET /metrics?drain=true` renders what the drain consumer
//! group polls from the broker instead (see `drain.rs`): every drained sample, so a
//! family may hold several samples of one series, in ascending time order; histogram
//! and summary series are summarised over the drained observations only. No other
//! parameter is accepted.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use datanexus_model::Labels;
use datanexus_store::{AggregateQuery, Sample, Selector, SeriesQuery, TimeRange};
use datanexus_telemetry::{Component, ErrorKind};

use crate::exposition::{
    Families, Family, Rendered, SeriesValue, observation_spec, render, summarise, to_text_format,
};
use crate::http::params::Params;
use crate::{AppState, Result};

/// The content type of the text exposition format 0.0.4.
pub(crate) const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Page size when reading a series' observations in full.
const OBSERVATION_PAGE: usize = 100_000;

/// Handles `GET /metrics`.
pub(crate) async fn scrape(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<Response> {
    let mut params = params?;
    let drain = params.flag("drain")?;
    params.finish()?;
    let bounds = &state.options().histogram_buckets;
    if drain {
        let drained = state.drainer().drain().await?;
        let mut families = Families::default();
        for point in &drained.points {
            families.push_point(point);
        }
        let rendered = render(&families.finish(), bounds);
        report_dropped(&state, &rendered);
        let body = state.drainer().body(rendered.text, drained.lease);
        return Ok(text_response(body));
    }
    let families = collect(&state).await?;
    let rendered = render(&families, bounds);
    report_dropped(&state, &rendered);
    Ok(text_response(Body::from(rendered.text)))
}

/// Handles `GET /internal/metrics`.
pub(crate) async fn internal(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<Response> {
    params?.finish()?;
    let mut text = to_text_format(&state.telemetry().encode());
    if let Some(control) = state.control() {
        text.push_str(&control_metrics(control));
    }
    Ok(text_response(Body::from(text)))
}

/// Name, type, help and value of one per-node family.
type ControlFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&datanexus_store_cluster::NodeStatus) -> u64,
);

/// A control node's per-node families (nodes are only known at run time, so they are
/// rendered here rather than registered).
fn control_metrics(control: &datanexus_store_cluster::ClusterStore) -> String {
    use std::fmt::Write;
    let status = control.status();
    let mut out = String::new();
    let families: [ControlFamily; 3] = [
        (
            "datanexus_control_node_backlog",
            "gauge",
            "Records placed on a worker node and not yet confirmed durable there (buffered or in flight).",
            |s| s.backlog,
        ),
        (
            "datanexus_control_node_up",
            "gauge",
            "1 when the node's last call succeeded.",
            |s| u64::from(s.state == "up"),
        ),
        (
            "datanexus_control_node_forwarded_records_total",
            "counter",
            "Records a worker node confirmed durable since this process started.",
            |s| s.forwarded,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &status {
            let node = s.url.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {}", value(s));
        }
    }
    out
}

fn text_response(body: Body) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    response
}

fn report_dropped(state: &AppState, rendered: &Rendered) {
    if !rendered.dropped.is_empty() {
        tracing::warn!(families = ?rendered.dropped, "metric families left out of the exposition: their names collide with others");
        state
            .telemetry()
            .error(Component::Exposition, ErrorKind::InvalidInput);
    }
}

/// The latest sample of every stored series; histogram and summary families summarised
/// from their stored observations.
async fn collect(state: &AppState) -> Result<Vec<Family>> {
    let mut families = Families::default();
    for latest in &state.store()?.latest().await? {
        families.push_latest(latest);
    }
    let mut families = families.finish();
    for family in families.iter_mut().filter(|f| f.is_observed()) {
        observe(state, family).await?;
    }
    Ok(families)
}

/// Replaces the latest samples of a histogram or summary family by the summaries of all
/// stored observations, stamped with the latest sample's time. Costs one store
/// aggregate per series.
async fn observe(state: &AppState, family: &mut Family) -> Result<()> {
    let bounds = &state.options().histogram_buckets;
    let (quantiles, buckets) = observation_spec(family.kind, bounds);
    let overlapping = overlapping_series(family);
    for (series, overlaps) in family.series.iter_mut().zip(overlapping) {
        let SeriesValue::Samples(latest) = &series.value else {
            continue;
        };
        let Some(timestamp_ns) = latest.last().map(|s| s.timestamp_ns) else {
            continue;
        };
        let selector = Selector {
            measurement: family.measurement.clone(),
            field: family.field.clone(),
            matchers: series.labels.clone().into_inner(),
        };
        let summary = if overlaps {
            let samples = observations(state, selector, &series.labels).await?;
            summarise(&samples, family.kind, bounds)
        } else {
            let query = AggregateQuery {
                selector,
                range: TimeRange::default(),
                step_ns: None,
                quantiles: quantiles.clone(),
                buckets: buckets.clone(),
            };
            state.store()?.aggregate(&query).await?.total
        };
        series.value = SeriesValue::Observed {
            summary,
            timestamp_ns,
        };
    }
    Ok(())
}

/// For each series: whether its labels as matchers would also select another series
/// (one with a superset of its labels), so that a store aggregate would not be its own.
fn overlapping_series(family: &Family) -> Vec<bool> {
    let names = |l: &Labels| l.iter().map(|(k, _)| k.to_owned()).collect::<Vec<_>>();
    let first = family.series.first().map(|s| names(&s.labels));
    if family
        .series
        .iter()
        .all(|s| Some(names(&s.labels)) == first)
    {
        // Same label names everywhere: distinct series differ in a value.
        return vec![false; family.series.len()];
    }
    family
        .series
        .iter()
        .map(|s| {
            family
                .series
                .iter()
                .any(|o| o.labels != s.labels && is_subset(&s.labels, &o.labels))
        })
        .collect()
}

/// Whether every label of `small` is in `big`.
fn is_subset(small: &Labels, big: &Labels) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// Every stored sample of exactly the series `labels` selected by `selector`.
async fn observations(
    state: &AppState,
    selector: Selector,
    labels: &Labels,
) -> Result<Vec<Sample>> {
    let mut query = SeriesQuery {
        selector,
        range: TimeRange::default(),
        limit: OBSERVATION_PAGE,
        offset: 0,
    };
    let mut samples = Vec::new();
    loop {
        let page = state.store()?.query(&query).await?;
        let returned = page.samples.len();
        samples.extend(
            page.samples
                .iter()
                .filter(|(i, _)| page.series.get(*i).is_some_and(|k| &k.labels == labels))
                .map(|(_, s)| *s),
        );
        if returned < OBSERVATION_PAGE {
            return Ok(samples);
        }
        query.offset += returned;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap()
    }

    fn family(label_sets: &[&[(&str, &str)]]) -> Family {
        Family {
            measurement: "h".into(),
            field: "value".into(),
            kind: datanexus_model::MetricType::Histogram,
            help: None,
            series: label_sets
                .iter()
                .map(|l| crate::exposition::Series {
                    labels: labels(l),
                    value: SeriesValue::Samples(Vec::new()),
                })
                .collect(),
        }
    }

    #[test]
    fn only_series_whose_labels_select_others_overlap() {
        let uniform = family(&[&[("a", "1")], &[("a", "2")]]);
        assert_eq!(overlapping_series(&uniform), [false, false]);
        let nested = family(&[&[], &[("a", "1")], &[("a", "1"), ("b", "2")], &[("a", "2")]]);
        assert_eq!(overlapping_series(&nested), [true, true, false, false]);
    }

    #[test]
    fn subsets_compare_names_and_values() {
        let a = labels(&[("host", "a")]);
        let ab = labels(&[("dc", "eu"), ("host", "a")]);
        assert!(is_subset(&a, &ab));
        assert!(!is_subset(&ab, &a));
        assert!(is_subset(&Labels::empty(), &a));
        assert!(!is_subset(&a, &labels(&[("host", "b")])));
    }
}
