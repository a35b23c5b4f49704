//! Workload `stream`: `--clients` concurrent `nimbus.NimbusService.ProcessEvent`
//! streams, each doing sequential round trips (send one `sq`, wait for its response)
//! until `--metrics` events were answered in all or `--duration` passed. Reports
//! events/s and the round-trip latency distribution; with `--echo`, the same workload is
//! first run against a bare tonic echo server in this process (the floor). A failed
//! round trip is counted and ends its stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use datanexus_proto::nimbus::EventRequest;
use datanexus_proto::nimbus::nimbus_service_client::NimbusServiceClient;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::report::{Latency, Report, latency_histogram, progress, record};
use crate::cli::BenchArgs;

pub(crate) async fn run(args: &BenchArgs) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    if args.echo {
        let addr = super::echo::start().await?;
        let target = format!("bare tonic echo at {addr} (the floor)");
        let outcome = round_trips(args, addr.to_string()).await?;
        reports.push(report("stream (echo)", target, args, outcome));
    }
    let addr = args.grpc_addr.to_string();
    let target = format!("nimbus.NimbusService/ProcessEvent at {addr}");
    let outcome = round_trips(args, addr).await?;
    reports.push(report("stream", target, args, outcome));
    Ok(reports)
}

struct Outcome {
    hist: Histogram<u64>,
    secs: f64,
    errors: u64,
    first_error: Option<String>,
}

fn report(name: &str, target: String, args: &BenchArgs, o: Outcome) -> Report {
    Report {
        workload: name.to_owned(),
        target,
        clients: args.clients,
        batch: 1,
        series: 0,
        unit: "events",
        requests_ok: o.hist.len(),
        errors: o.errors,
        first_error: o.first_error,
        acknowledged: o.hist.len(),
        seconds: o.secs,
        per_s: o.hist.len() as f64 / o.secs.max(1e-9),
        latency_ms: Latency::of(&o.hist),
        queryable: None,
        verify_error: None,
        answer: None,
    }
}

async fn round_trips(args: &BenchArgs, addr: String) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.clients > 0, "--clients must be > 0");
    let budget = Arc::new(AtomicU64::new(args.metrics));
    let deadline = Instant::now() + args.duration;
    let run = format!("{:x}", datanexus_model::time::now_ns());
    let bar = progress(args.metrics, "events");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let url = format!("http://{addr}");
        let client_id = format!("bench-{run}-{i}");
        let mut hist = latency_histogram()?;
        let (budget, bar) = (budget.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let result = one_stream(url, client_id, &budget, deadline, &mut hist, &bar).await;
            (hist, result)
        }));
    }
    let mut outcome = Outcome {
        hist: latency_histogram()?,
        secs: 0.0,
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        let (hist, result) = t.await?;
        outcome.hist.add(&hist)?;
        if let Err(e) = result {
            outcome.errors += 1;
            outcome.first_error.get_or_insert(format!("{e:#}"));
        }
    }
    bar.finish_and_clear();
    outcome.secs = start.elapsed().as_secs_f64();
    Ok(outcome)
}

/// One stream's round trips, recorded in `hist`.
async fn one_stream(
    url: String,
    client_id: String,
    budget: &AtomicU64,
    deadline: Instant,
    hist: &mut Histogram<u64>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut client = NimbusServiceClient::connect(url.clone())
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let (tx, rx) = mpsc::channel(4);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("client_id", client_id.parse()?);
    let mut responses = client.process_event(req).await?.into_inner();
    let mut n: i32 = 0;
    while Instant::now() < deadline && take_one(budget) {
        n = n.wrapping_add(1) % 46_000;
        let t = Instant::now();
        tx.send(EventRequest {
            event_name: "sq".into(),
            number: n,
        })
        .await?;
        let resp = responses.next().await.context("stream ended")??;
        anyhow::ensure!(
            resp.number == n,
            "response for {} while waiting for {n}",
            resp.number
        );
        record(hist, t.elapsed());
        bar.inc(1);
    }
    Ok(())
}

fn take_one(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
        .is_ok()
}
