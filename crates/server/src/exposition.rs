//! Pure rendering of stored or drained samples as Prometheus text exposition format
//! 0.0.4 (`GET /metrics`). No I/O: the HTTP layer collects [`Family`]s (from
//! `Store::latest` plus aggregates, or from drained points) and calls [`render`].
//!
//! Rules:
//! - A family is one (measurement, field). Its exposed name is the measurement when the
//!   field is `value`, else `measurement_field` (made legal: other characters become
//!   `_`). Counters get a `_total` suffix when they lack one (what promtool's linter and
//!   OpenMetrics expect).
//! - Exactly one `# HELP` (the metric's help text, else [`DEFAULT_HELP`]) and one
//!   `# TYPE` line per family; families sorted by exposed name, series by label set.
//! - The kind and help of a family are those of its newest sample (a family is exposed
//!   with one type even if its series were written with several).
//! - Counters, gauges and untyped series: one line per sample, with its timestamp in ms
//!   (the latest sample per series in a normal scrape; every drained sample, in
//!   ascending time order, in a drain scrape).
//! - Histograms: the series' observations as cumulative `name_bucket{…,le="…"}` lines up
//!   to `le="+Inf"`, then `name_sum` and `name_count`; summaries: `name{…,quantile=…}`
//!   for 0.5, 0.9 and 0.99, then `name_sum` and `name_count`; all stamped with the
//!   newest observation's time. A user label `le` (histograms) or `quantile`
//!   (summaries) is exposed as `exported_le` / `exported_quantile`.
//! - Name collisions (two families with one exposed name, or a family named like
//!   another's `_bucket`/`_sum`/`_count` lines): the first family in exposed-name order
//!   wins (on a tie, the one whose field is `value`, then by measurement and field); the
//!   others are left out and reported in [`Rendered::dropped`], never rendered twice.
//!
//! # Layout
//! - `drain.rs`: drain-on-scrape (`GET /metrics?drain=true`).
//! - `text.rs`: escaping, value formatting and legal label names.
//! - `openmetrics.rs`: OpenMetrics text (the telemetry registry's) to format 0.0.4.

pub(crate) mod drain;
mod openmetrics;
mod text;

use std::collections::{BTreeMap, HashSet};

use datanexus_model::event::sanitize_metric_name;
use datanexus_model::point::VALUE_FIELD;
use datanexus_model::{Labels, MetricType, Point};
use datanexus_store::{Aggregate, Latest, Sample, Summary};

pub(crate) use self::openmetrics::to_text_format;
pub(crate) use self::text::value_string;
use self::text::{escape_help, escape_label_value, format_value, label_name};

/// Help text of families written without one.
pub(crate) const DEFAULT_HELP: &str = "ingested by Data Nexus (no help text was given)";

/// Quantiles exposed for summary-typed families.
pub(crate) const SUMMARY_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

const NANOS_PER_MILLI: i64 = 1_000_000;

/// The samples of one (measurement, field).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Family {
    pub(crate) measurement: String,
    pub(crate) field: String,
    pub(crate) kind: MetricType,
    pub(crate) help: Option<String>,
    /// Sorted by label set.
    pub(crate) series: Vec<Series>,
}

/// One series of a family.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub(crate) labels: Labels,
    pub(crate) value: SeriesValue,
}

/// What is known about a series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SeriesValue {
    /// Samples in ascending time order (a histogram or summary family summarises them
    /// when rendered).
    Samples(Vec<Sample>),
    /// Observations already summarised (with the family's buckets and
    /// [`SUMMARY_QUANTILES`]), stamped with the newest observation's time.
    Observed { summary: Summary, timestamp_ns: i64 },
}

impl Family {
    /// Whether the family is exposed from summarised observations.
    pub(crate) fn is_observed(&self) -> bool {
        matches!(self.kind, MetricType::Histogram | MetricType::Summary)
    }

    /// The exposed metric name.
    pub(crate) fn exposed_name(&self) -> String {
        let base = if self.field == VALUE_FIELD {
            sanitize_metric_name(&self.measurement)
        } else {
            sanitize_metric_name(&format!("{}_{}", self.measurement, self.field))
        };
        if self.kind == MetricType::Counter && !base.ends_with("_total") {
            base + "_total"
        } else {
            base
        }
    }

    /// Every sample name the family renders.
    fn line_names(&self, name: &str) -> Vec<String> {
        let suffixes: &[&str] = match self.kind {
            MetricType::Histogram => &["", "_bucket", "_sum", "_count"],
            MetricType::Summary => &["", "_sum", "_count"],
            _ => &[""],
        };
        suffixes.iter().map(|s| format!("{name}{s}")).collect()
    }
}

/// Groups samples into [`Family`]s.
#[derive(Debug, Default)]
pub(crate) struct Families {
    map: BTreeMap<(String, String), Building>,
}

#[derive(Debug)]
struct Building {
    kind: MetricType,
    kind_ns: i64,
    help: Option<String>,
    help_ns: i64,
    series: BTreeMap<Labels, Vec<Sample>>,
}

impl Families {
    /// Adds one sample of series (`measurement`, `field`, `labels`).
    pub(crate) fn push(
        &mut self,
        measurement: &str,
        field: &str,
        labels: &Labels,
        kind: MetricType,
        help: Option<&str>,
        sample: Sample,
    ) {
        let key = (measurement.to_owned(), field.to_owned());
        let family = self.map.entry(key).or_insert_with(|| Building {
            kind,
            kind_ns: i64::MIN,
            help: None,
            help_ns: i64::MIN,
            series: BTreeMap::new(),
        });
        let ts = sample.timestamp_ns;
        if ts >= family.kind_ns {
            (family.kind, family.kind_ns) = (kind, ts);
        }
        if let Some(h) = help.filter(|h| !h.is_empty())
            && ts >= family.help_ns
        {
            (family.help, family.help_ns) = (Some(h.to_owned()), ts);
        }
        match family.series.get_mut(labels) {
            Some(samples) => samples.push(sample),
            None => {
                family.series.insert(labels.clone(), vec![sample]);
            }
        }
    }

    /// Adds the latest sample of a stored series.
    pub(crate) fn push_latest(&mut self, latest: &Latest) {
        let k = &latest.key;
        let help = latest.help.as_deref();
        self.push(
            &k.measurement,
            &k.field,
            &k.labels,
            latest.kind,
            help,
            latest.sample,
        );
    }

    /// Adds every numeric field of a point (strings are not samples).
    pub(crate) fn push_point(&mut self, p: &Point) {
        for (field, value) in &p.fields {
            if let Some(v) = value.as_f64() {
                let sample = Sample {
                    timestamp_ns: p.timestamp_ns,
                    value: v,
                };
                self.push(
                    &p.measurement,
                    field,
                    &p.labels,
                    p.kind,
                    p.help.as_deref(),
                    sample,
                );
            }
        }
    }

    /// The families sorted by (measurement, field), series by labels, samples by time
    /// (of several samples with one timestamp, the last pushed is kept).
    pub(crate) fn finish(self) -> Vec<Family> {
        self.map
            .into_iter()
            .map(|((measurement, field), b)| Family {
                measurement,
                field,
                kind: b.kind,
                help: b.help,
                series: b
                    .series
                    .into_iter()
                    .map(|(labels, samples)| Series {
                        labels,
                        value: SeriesValue::Samples(sort_dedup(samples)),
                    })
                    .collect(),
            })
            .collect()
    }
}

fn sort_dedup(mut samples: Vec<Sample>) -> Vec<Sample> {
    samples.sort_by_key(|s| s.timestamp_ns);
    samples.dedup_by(|later, kept| {
        let same = later.timestamp_ns == kept.timestamp_ns;
        if same {
            *kept = *later;
        }
        same
    });
    samples
}

/// `bounds` made usable as histogram buckets: finite, ascending, distinct.
pub(crate) fn usable_bounds(bounds: &[f64]) -> Vec<f64> {
    let mut b: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
    b.sort_by(f64::total_cmp);
    b.dedup();
    b
}

/// What a series of `kind` is summarised with: `(quantiles, bucket bounds)` — the
/// usable `bounds` for histograms, the [`SUMMARY_QUANTILES`] for summaries.
pub(crate) fn observation_spec(kind: MetricType, bounds: &[f64]) -> (Vec<f64>, Vec<f64>) {
    match kind {
        MetricType::Histogram => (Vec::new(), usable_bounds(bounds)),
        MetricType::Summary => (SUMMARY_QUANTILES.to_vec(), Vec::new()),
        _ => (Vec::new(), Vec::new()),
    }
}

/// Summarises `samples` as a series of `kind` (see [`observation_spec`]), with sum and
/// count (NaN observations are skipped).
pub(crate) fn summarise(samples: &[Sample], kind: MetricType, bounds: &[f64]) -> Summary {
    let (quantiles, bounds) = observation_spec(kind, bounds);
    let Ok(mut aggregate) = Aggregate::new(&quantiles, &bounds) else {
        return Summary::default();
    };
    for s in samples {
        aggregate.push(s.value);
    }
    aggregate.finish()
}

/// The exposition text, and the families left out because of name collisions.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Rendered {
    pub(crate) text: String,
    /// `"measurement/field as name"` of each family left out.
    pub(crate) dropped: Vec<String>,
}

/// Renders `families`; histogram and summary series given as samples are summarised
/// with `bounds` (see the module docs for every rule).
pub(crate) fn render(families: &[Family], bounds: &[f64]) -> Rendered {
    let mut named: Vec<(String, &Family)> =
        families.iter().map(|f| (f.exposed_name(), f)).collect();
    named.sort_by(|(a, fa), (b, fb)| {
        let rank = |f: &Family| {
            (
                f.field != VALUE_FIELD,
                f.measurement.clone(),
                f.field.clone(),
            )
        };
        a.cmp(b).then_with(|| rank(fa).cmp(&rank(fb)))
    });
    let mut claimed = HashSet::new();
    let mut out = Rendered::default();
    for (name, family) in named {
        let lines = family.line_names(&name);
        if lines.iter().any(|l| claimed.contains(l)) {
            out.dropped
                .push(format!("{}/{} as {name}", family.measurement, family.field));
            continue;
        }
        claimed.extend(lines);
        render_family(&name, family, bounds, &mut out.text);
    }
    out
}

fn render_family(name: &str, family: &Family, bounds: &[f64], out: &mut String) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_help(family.help.as_deref().unwrap_or(DEFAULT_HELP), out);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(family.kind.as_str());
    out.push('\n');
    for series in &family.series {
        match (&series.value, family.is_observed()) {
            (SeriesValue::Samples(samples), false) => {
                let line = Line::new(name, &series.labels, None);
                for s in samples {
                    line.write("", None, s.value, s.timestamp_ns, out);
                }
            }
            (SeriesValue::Samples(samples), true) => {
                let Some(newest) = samples.last() else {
                    continue;
                };
                let summary = summarise(samples, family.kind, bounds);
                render_observed(
                    name,
                    family.kind,
                    &series.labels,
                    &summary,
                    newest.timestamp_ns,
                    out,
                );
            }
            (
                SeriesValue::Observed {
                    summary,
                    timestamp_ns,
                },
                _,
            ) => {
                render_observed(
                    name,
                    family.kind,
                    &series.labels,
                    summary,
                    *timestamp_ns,
                    out,
                );
            }
        }
    }
}

fn render_observed(
    name: &str,
    kind: MetricType,
    labels: &Labels,
    summary: &Summary,
    timestamp_ns: i64,
    out: &mut String,
) {
    let count = summary.count as f64;
    let reserved = if kind == MetricType::Histogram {
        "le"
    } else {
        "quantile"
    };
    let line = Line::new(name, labels, Some(reserved));
    if kind == MetricType::Histogram {
        for (le, cumulative) in &summary.buckets {
            let le = value_string(*le);
            let cumulative = *cumulative as f64;
            line.write("_bucket", Some(("le", &le)), cumulative, timestamp_ns, out);
        }
        line.write("_bucket", Some(("le", "+Inf")), count, timestamp_ns, out);
    } else {
        for (q, v) in &summary.quantiles {
            let q = value_string(*q);
            let v = v.unwrap_or(f64::NAN);
            line.write("", Some(("quantile", &q)), v, timestamp_ns, out);
        }
    }
    line.write("_sum", None, summary.sum, timestamp_ns, out);
    line.write("_count", None, count, timestamp_ns, out);
}

/// The label part of a series' lines, rendered once: `a="x",b="y"` (escaped; a user
/// label named `reserved` is exposed as `exported_<reserved>`).
struct Line<'a> {
    name: &'a str,
    labels: String,
}

impl<'a> Line<'a> {
    fn new(name: &'a str, labels: &Labels, reserved: Option<&str>) -> Self {
        let mut text = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            if Some(k) == reserved {
                text.push_str("exported_");
            }
            text.push_str(&label_name(k));
            text.push_str("=\"");
            escape_label_value(v, &mut text);
            text.push('"');
        }
        Line { name, labels: text }
    }

    /// `name+suffix{labels[,extra]} value timestamp_ms`.
    fn write(
        &self,
        suffix: &str,
        extra: Option<(&str, &str)>,
        value: f64,
        ts_ns: i64,
        out: &mut String,
    ) {
        out.push_str(self.name);
        out.push_str(suffix);
        if !self.labels.is_empty() || extra.is_some() {
            out.push('{');
            out.push_str(&self.labels);
            if let Some((k, v)) = extra {
                if !self.labels.is_empty() {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                out.push_str(v);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        format_value(value, out);
        out.push(' ');
        out.push_str(&ts_ns.div_euclid(NANOS_PER_MILLI).to_string());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests;
