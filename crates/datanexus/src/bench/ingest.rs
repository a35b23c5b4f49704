//! The HTTP workloads: `http-json` (`POST /metrics`), `line-protocol` (`POST /write`),
//! `remote-write` (`POST /api/v1/write`) and `query` (`GET --query-path`).

use std::time::Instant;

use bytes::Bytes;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName};

use super::http::Endpoint;
use super::load::{self, Outcome, Plan};
use super::payload::{self, METRIC, Shape};
use super::report::{Latency, Report, progress};
use super::verify::{self, Check};
use crate::cli::{BenchArgs, Workload};

/// The Prometheus remote write version header.
const REMOTE_WRITE_VERSION: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-version");

/// Runs an HTTP ingest workload.
///
/// # Errors
/// Bad flags, or no connection could be made.
pub(crate) async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.batch > 0 && args.series > 0 && args.metrics > 0,
        "--batch, --series and --metrics must be > 0"
    );
    let interval_ns = i64::try_from(args.interval.as_nanos())?;
    anyhow::ensure!(interval_ns > 0, "--interval must be > 0");
    let shape = Shape::new(
        args.metrics,
        args.series,
        args.batch,
        interval_ns,
        datanexus_model::time::now_ns(),
    );
    let addr = args.http_addr;
    let (name, endpoint, bodies) = match args.workload {
        Workload::HttpJson => (
            "http-json",
            Endpoint::post(addr, "/metrics", &[(CONTENT_TYPE, "application/json")]),
            payload::json(&shape),
        ),
        Workload::LineProtocol => {
            let mut path = "/write?precision=ns".to_owned();
            if let Some(db) = &args.db {
                path.push_str("&db=");
                path.push_str(&encode_query_value(db));
            }
            let headers = [(CONTENT_TYPE, "text/plain; charset=utf-8")];
            let bodies = payload::line_protocol(&shape);
            (
                "line-protocol",
                Endpoint::post(addr, path, &headers),
                bodies,
            )
        }
        Workload::RemoteWrite => {
            let headers = [
                (CONTENT_ENCODING, "snappy"),
                (CONTENT_TYPE, "application/x-protobuf"),
                (REMOTE_WRITE_VERSION, "0.1.0"),
            ];
            let bodies = payload::remote_write(&shape)?;
            let endpoint = Endpoint::post(addr, "/api/v1/write", &headers);
            ("remote-write", endpoint, bodies)
        }
        other => anyhow::bail!("{other:?} is not an HTTP ingest workload"),
    };
    let bar = progress(args.metrics, "samples");
    let target = endpoint.describe();
    let plan = Plan {
        endpoint,
        bodies,
        clients: args.clients,
        deadline: Instant::now() + args.duration,
    };
    let outcome = load::run(plan, &bar).await?;
    bar.finish_and_clear();
    let started = outcome.started;
    let mut report = report(name, target, args, "samples", outcome);
    if !args.no_verify && report.acknowledged > 0 {
        let check = Check {
            http_addr: args.http_addr,
            metric: METRIC,
            run: &shape.run,
            timeout: args.verify_timeout,
        };
        verify::queryable(&check, started, &mut report).await;
    }
    Ok(report)
}

/// Runs the `query` workload: `--queries` GETs of `--query-path`.
///
/// # Errors
/// Bad flags, or no connection could be made.
pub(crate) async fn query(args: &BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.queries > 0, "--queries must be > 0");
    anyhow::ensure!(
        args.query_path.starts_with('/'),
        "--query-path must start with /: {}",
        args.query_path
    );
    let endpoint = Endpoint::get(args.http_addr, args.query_path.clone());
    let count = usize::try_from(args.queries)?;
    let bar = progress(args.queries, "queries");
    let target = endpoint.describe();
    let plan = Plan {
        endpoint,
        bodies: vec![(Bytes::new(), 1); count],
        clients: args.clients,
        deadline: Instant::now() + args.duration,
    };
    let outcome = load::run(plan, &bar).await?;
    bar.finish_and_clear();
    let answer = outcome.first_answer.as_ref().map(|body| {
        let cut = body.get(..1000).unwrap_or(body);
        String::from_utf8_lossy(cut).trim().to_owned()
    });
    let mut report = report("query", target, args, "queries", outcome);
    report.batch = 1;
    report.series = 0;
    report.answer = answer;
    Ok(report)
}

fn report(name: &str, target: String, args: &BenchArgs, unit: &'static str, o: Outcome) -> Report {
    Report {
        workload: name.to_owned(),
        target,
        clients: args.clients,
        batch: args.batch,
        series: args.series,
        unit,
        requests_ok: o.requests_ok,
        errors: o.errors,
        first_error: o.first_error,
        acknowledged: o.acknowledged,
        seconds: o.seconds,
        per_s: o.acknowledged as f64 / o.seconds.max(1e-9),
        latency_ms: Latency::of(&o.hist),
        queryable: None,
        verify_error: None,
        answer: None,
    }
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub(crate) fn encode_query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("bench"), "bench");
        assert_eq!(encode_query_value("a b&c"), "a%20b%26c");
    }
}
