//! The result of one measured run, printed as an aligned table or one JSON object a
//! line; latency histograms (µs) and the progress bar on stderr.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::OutputFormat;

/// Highest latency a histogram records, in µs (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 600_000_000;

/// A latency histogram in µs, 3 significant digits.
///
/// # Errors
/// Never for these bounds; kept fallible as the constructor is.
pub(crate) fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?)
}

/// Records `elapsed` (at least 1 µs, at most the histogram's bound).
pub(crate) fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

/// A progress bar over `total` units on stderr; indicatif hides it when stderr is not
/// a terminal.
pub(crate) fn progress(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!(
        "{{spinner}} {{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} {{per_sec}} eta {{eta}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Latency percentiles in ms.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Latency {
    pub(crate) fn of(hist: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(hist.value_at_quantile(0.5)),
            p90: ms(hist.value_at_quantile(0.9)),
            p99: ms(hist.value_at_quantile(0.99)),
            max: ms(hist.max()),
            mean: hist.mean() / 1000.0,
        }
    }
}

/// Ingest-to-queryable: when a count query first saw every acknowledged sample.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Queryable {
    /// Samples counted.
    pub(crate) samples: u64,
    /// Seconds from the first request until the count matched.
    pub(crate) seconds: f64,
    /// `samples / seconds`.
    pub(crate) per_s: f64,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Workload name (`line-protocol`, …), with a qualifier for the stream echo floor.
    pub(crate) workload: String,
    /// Method and URL (or gRPC address) the requests went to.
    pub(crate) target: String,
    pub(crate) clients: u64,
    /// Units per request (1 for stream and query).
    pub(crate) batch: u64,
    pub(crate) series: u64,
    /// What was counted: `samples`, `events` or `queries`.
    pub(crate) unit: &'static str,
    /// Requests answered with success.
    pub(crate) requests_ok: u64,
    /// Requests that failed: non-2xx answers, gRPC errors, transport errors.
    pub(crate) errors: u64,
    /// The first failure, for the reader.
    pub(crate) first_error: Option<String>,
    /// Units acknowledged (in successful requests).
    pub(crate) acknowledged: u64,
    /// Seconds from the first request to the last answer.
    pub(crate) seconds: f64,
    /// `acknowledged / seconds`.
    pub(crate) per_s: f64,
    /// Request latency (ms), successful and failed requests alike.
    pub(crate) latency_ms: Latency,
    /// Ingest-to-queryable, when measured.
    pub(crate) queryable: Option<Queryable>,
    /// Why ingest-to-queryable could not be measured, when it was asked for.
    pub(crate) verify_error: Option<String>,
    /// The first successful answer's body (query workload), cut to 1000 bytes.
    pub(crate) answer: Option<String>,
}

impl Report {
    /// Whether the run had no failed request and no failed verification.
    pub(crate) fn succeeded(&self) -> bool {
        self.errors == 0 && self.verify_error.is_none()
    }
}

/// Prints `reports` on stdout in `format`.
///
/// # Errors
/// A report cannot be serialized (not expected).
pub(crate) fn print(reports: &[Report], format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            for r in reports {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        OutputFormat::Table => print!("{}", table(reports)),
    }
    Ok(())
}

const HEADER: [&str; 14] = [
    "workload",
    "clients",
    "batch",
    "requests",
    "errors",
    "acknowledged",
    "secs",
    "per s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "queryable s",
    "queryable/s",
];

fn row(r: &Report) -> [String; 14] {
    let (q_secs, q_rate) = match &r.queryable {
        Some(q) => (format!("{:.2}", q.seconds), format!("{:.0}", q.per_s)),
        None if r.verify_error.is_some() => ("FAILED".to_owned(), "-".to_owned()),
        None => ("-".to_owned(), "-".to_owned()),
    };
    [
        r.workload.clone(),
        r.clients.to_string(),
        r.batch.to_string(),
        r.requests_ok.to_string(),
        r.errors.to_string(),
        format!("{} {}", r.acknowledged, r.unit),
        format!("{:.2}", r.seconds),
        format!("{:.0}", r.per_s),
        format!("{:.2}", r.latency_ms.p50),
        format!("{:.2}", r.latency_ms.p90),
        format!("{:.2}", r.latency_ms.p99),
        format!("{:.2}", r.latency_ms.max),
        q_secs,
        q_rate,
    ]
}

/// The aligned table: a header, one row per report, then targets and failures.
fn table(reports: &[Report]) -> String {
    let rows: Vec<[String; 14]> = reports.iter().map(row).collect();
    let mut widths = HEADER.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(text, "{cell:<w$}");
            } else {
                let _ = write!(text, "  {cell:>w$}");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut HEADER.iter().copied());
    for r in &rows {
        line(&mut r.iter().map(String::as_str));
    }
    for r in reports {
        let series = match r.series {
            0 => String::new(),
            n => format!(" ({n} series)"),
        };
        let _ = writeln!(out, "{}: {}{series}", r.workload, r.target);
        if let Some(e) = &r.first_error {
            let _ = writeln!(out, "{}: first error: {e}", r.workload);
        }
        if let Some(e) = &r.verify_error {
            let _ = writeln!(out, "{}: ingest-to-queryable: {e}", r.workload);
        }
        if let Some(a) = &r.answer {
            let _ = writeln!(out, "{}: first answer: {a}", r.workload);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            workload: "line-protocol".into(),
            target: "POST http://127.0.0.1:8080/write?precision=ns".into(),
            clients: 4,
            batch: 5000,
            series: 10,
            unit: "samples",
            requests_ok: 2,
            errors: 1,
            first_error: Some("400 Bad Request: line 1".into()),
            acknowledged: 10_000,
            seconds: 0.5,
            per_s: 20_000.0,
            latency_ms: Latency::default(),
            queryable: Some(Queryable {
                samples: 10_000,
                seconds: 1.0,
                per_s: 10_000.0,
            }),
            verify_error: None,
            answer: None,
        }
    }

    #[test]
    fn table_has_a_row_per_report_and_names_the_first_error() {
        let text = table(&[report()]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("workload"), "{text}");
        assert!(lines[1].starts_with("line-protocol"), "{text}");
        assert!(lines[1].contains("10000 samples"), "{text}");
        assert!(text.contains("first error: 400 Bad Request"), "{text}");
        assert!(!report().succeeded());
    }

    #[test]
    fn json_report_carries_latency_and_queryable() {
        let v = serde_json::to_value(report()).unwrap();
        assert_eq!(v["errors"], 1);
        assert_eq!(v["queryable"]["samples"], 10_000);
        assert!(v["latency_ms"]["p99"].is_number());
    }

    #[test]
    fn latencies_are_clamped_into_the_histogram() {
        let mut h = latency_histogram().unwrap();
        record(&mut h, Duration::ZERO);
        record(&mut h, Duration::from_secs(100_000));
        assert_eq!(h.len(), 2);
        assert!(Latency::of(&h).max >= 599_000.0);
    }
}
