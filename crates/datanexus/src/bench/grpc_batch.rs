//! Workload `grpc-batch`: `--clients` concurrent gRPC connections each sending
//! `data_nexus.IngestMetrics` batches of `--batch` metrics (`bench_metric`, labels
//! `series` and `run`) over `--series` distinct series until `--metrics` metrics were
//! sent (or `--duration` passed). A failed call is counted, not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use datanexus_proto::data_nexus::{BatchMetrics, Metric};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use super::report::{Latency, Report, latency_histogram, progress, record};
use super::verify::{self, Check};
use crate::cli::BenchArgs;

/// The metric this workload writes.
const METRIC: &str = "bench_metric";

struct Shared {
    sent: AtomicU64,
    args: BenchArgs,
    deadline: Instant,
    /// Value of the `run` label on every metric of this run, so its samples can be
    /// counted apart from earlier runs' (ingest-to-queryable).
    run: String,
    bar: ProgressBar,
}

/// What one connection did.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.batch > 0 && args.clients > 0 && args.series > 0,
        "--batch, --clients and --series must be > 0"
    );
    let url = format!("http://{}", args.grpc_addr);
    let shared = Arc::new(Shared {
        sent: AtomicU64::new(0),
        deadline: Instant::now() + args.duration,
        run: format!("{:x}", datanexus_model::time::now_ns()),
        bar: progress(args.metrics, "metrics"),
        args,
    });
    let mut clients = Vec::new();
    for _ in 0..shared.args.clients {
        let c = MetricsServiceClient::connect(url.clone())
            .await
            .with_context(|| format!("cannot connect to {url}"))?
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        clients.push(c);
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(grpc_client(c, shared.clone())))
        .collect();
    let mut total = Tally {
        hist: latency_histogram()?,
        ok: 0,
        acked: 0,
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        let one = t.await??;
        total.hist.add(&one.hist)?;
        total.ok += one.ok;
        total.acked += one.acked;
        total.errors += one.errors;
        if total.first_error.is_none() {
            total.first_error = one.first_error;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    shared.bar.finish_and_clear();
    let a = &shared.args;
    let mut report = Report {
        workload: "grpc-batch".into(),
        target: format!("data_nexus.MetricsService/IngestMetrics at {}", a.grpc_addr),
        clients: a.clients,
        batch: a.batch,
        series: a.series,
        unit: "samples",
        requests_ok: total.ok,
        errors: total.errors,
        first_error: total.first_error,
        acknowledged: total.acked,
        seconds,
        per_s: total.acked as f64 / seconds.max(1e-9),
        latency_ms: Latency::of(&total.hist),
        queryable: None,
        verify_error: None,
        answer: None,
    };
    if !a.no_verify && report.acknowledged > 0 {
        let check = Check {
            http_addr: a.http_addr,
            metric: METRIC,
            run: &shared.run,
            timeout: a.verify_timeout,
        };
        verify::queryable(&check, start, &mut report).await;
    }
    Ok(report)
}

/// One connection's loop.
async fn grpc_client(
    mut client: MetricsServiceClient<tonic::transport::Channel>,
    shared: Arc<Shared>,
) -> anyhow::Result<Tally> {
    let a = &shared.args;
    let mut tally = Tally {
        hist: latency_histogram()?,
        ok: 0,
        acked: 0,
        errors: 0,
        first_error: None,
    };
    let now_s = (datanexus_model::time::now_ns() / 1_000_000_000) - 86_400;
    loop {
        let base = shared.sent.fetch_add(a.batch, Ordering::Relaxed);
        if base >= a.metrics || Instant::now() >= shared.deadline {
            break;
        }
        let metrics: Vec<Metric> = (base..(base + a.batch).min(a.metrics))
            .map(|n| {
                let series = n % a.series;
                Metric {
                    name: METRIC.into(),
                    value: (n % 1000) as f64,
                    r#type: "gauge".into(),
                    timestamp: now_s + (n / a.series) as i64,
                    labels: [
                        ("series".to_owned(), series.to_string()),
                        ("run".to_owned(), shared.run.clone()),
                    ]
                    .into(),
                }
            })
            .collect();
        let sent = metrics.len() as u64;
        let t = Instant::now();
        let answer = client.ingest_metrics(BatchMetrics { metrics }).await;
        record(&mut tally.hist, t.elapsed());
        shared.bar.inc(sent);
        match answer {
            Ok(resp) => {
                tally.ok += 1;
                tally.acked += resp.into_inner().event_ids.len() as u64;
            }
            Err(status) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                shared.bar.set_message(format!("{} errors", tally.errors));
            }
        }
    }
    Ok(tally)
}
