//! `datanexus bench`: a load generator against a running server.
//!
//! Workload `grpc-batch`: `--clients` concurrent gRPC connections each sending
//! `data_nexus.IngestMetrics` batches of `--batch` metrics over `--series` distinct
//! series until `--metrics` metrics were acknowledged (or `--duration` passed). Reports
//! acknowledged metrics/s and the latency distribution of the calls (HDR histogram), and
//! with `--http`, the time until every acknowledged sample is queryable (counted with
//! `GET /metrics/bench_metric/aggregate?label.run=<this run>`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use datanexus_proto::data_nexus::{BatchMetrics, Metric};
use hdrhistogram::Histogram;

use crate::cli::{BenchArgs, Workload};

mod echo;
mod stream;

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.workload {
        Workload::GrpcBatch => grpc_batch(args).await,
        Workload::Stream => stream::run(args).await,
    }
}

struct Shared {
    sent: AtomicU64,
    args: BenchArgs,
    deadline: Instant,
    /// Value of the `run` label on every metric of this run, so its samples can be
    /// counted apart from earlier runs' (ingest-to-queryable).
    run: String,
}

async fn grpc_batch(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch > 0 && args.clients > 0 && args.series > 0,
        "--batch, --clients and --series must be > 0"
    );
    let url = format!("http://{}", args.addr);
    let shared = Arc::new(Shared {
        sent: AtomicU64::new(0),
        deadline: Instant::now() + args.duration,
        run: format!("{:x}", datanexus_model::time::now_ns()),
        args,
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..shared.args.clients {
        let c = MetricsServiceClient::connect(url.clone())
            .await
            .with_context(|| format!("cannot connect to {url}"))?
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        tasks.push(tokio::spawn(grpc_client(c, client, shared.clone())));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut acked = 0u64;
    for t in tasks {
        let (h, n) = t.await??;
        hist.add(h)?;
        acked += n;
    }
    let secs = start.elapsed().as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!("workload     grpc-batch (data_nexus.IngestMetrics)");
    println!(
        "clients      {}   batch {}   series {}",
        shared.args.clients, shared.args.batch, shared.args.series
    );
    println!("acknowledged {acked} metrics in {secs:.2} s");
    println!(
        "throughput   {:.0} metrics/s   ({:.1} batches/s)",
        acked as f64 / secs,
        hist.len() as f64 / secs
    );
    println!(
        "latency ms   p50 {:.2}   p90 {:.2}   p99 {:.2}   max {:.2}",
        us(0.5),
        us(0.9),
        us(0.99),
        hist.max() as f64 / 1000.0
    );
    if let Some(http) = shared.args.http {
        let path = format!("/metrics/bench_metric/aggregate?label.run={}", shared.run);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let count = query_count(http, &path).await.unwrap_or(0);
            if count >= acked {
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "queryable    all {acked} after {secs:.2} s   ({:.0} samples/s ingest-to-queryable)",
                    acked as f64 / secs
                );
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {count} of {acked} samples queryable after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// `count` of an aggregate answer, by a plain HTTP/1.1 GET.
async fn query_count(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    Ok(v["count"].as_u64().unwrap_or(0))
}

/// One connection's loop; returns its latency histogram (µs) and acknowledged count.
async fn grpc_client(
    mut client: MetricsServiceClient<tonic::transport::Channel>,
    _id: u64,
    shared: Arc<Shared>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let a = &shared.args;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut acked = 0u64;
    let now_s = (datanexus_model::time::now_ns() / 1_000_000_000) - 86_400;
    loop {
        let base = shared.sent.fetch_add(a.batch, Ordering::Relaxed);
        if base >= a.metrics || Instant::now() >= shared.deadline {
            break;
        }
        let metrics = (0..a.batch)
            .map(|i| {
                let n = base + i;
                let series = n % a.series;
                Metric {
                    name: "bench_metric".into(),
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
        let t = Instant::now();
        let resp = client
            .ingest_metrics(BatchMetrics { metrics })
            .await
            .context("IngestMetrics failed")?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
        acked += resp.into_inner().event_ids.len() as u64;
    }
    Ok((hist, acked))
}
