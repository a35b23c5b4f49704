//! Workload `stream`: `--clients` concurrent `nimbus.NimbusService.ProcessEvent`
//! streams, each doing sequential round trips (send one `sq`, wait for its response)
//! until `--metrics` events were answered in all or `--duration` passed. Reports
//! events/s and the round-trip latency distribution; with `--echo`, the same workload is
//! first run against a bare tonic echo server in this process (the floor).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use datanexus_proto::nimbus::EventRequest;
use datanexus_proto::nimbus::nimbus_service_client::NimbusServiceClient;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::BenchArgs;

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.echo {
        let addr = super::echo::start().await?;
        report(
            "bare tonic echo (floor)",
            &args,
            round_trips(&args, addr.to_string()).await?,
        );
    }
    let addr = args.addr.to_string();
    report("datanexus pipeline", &args, round_trips(&args, addr).await?);
    Ok(())
}

struct Outcome {
    hist: Histogram<u64>,
    secs: f64,
}

fn report(what: &str, args: &BenchArgs, o: Outcome) {
    let ms = |q: f64| o.hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "stream {what:<26} streams {:>4}  {:>9.0} events/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} events)",
        args.clients,
        o.hist.len() as f64 / o.secs,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        o.hist.max() as f64 / 1000.0,
        o.hist.len()
    );
}

async fn round_trips(args: &BenchArgs, addr: String) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.clients > 0, "--clients must be > 0");
    let budget = Arc::new(AtomicU64::new(args.metrics));
    let deadline = Instant::now() + args.duration;
    let run = format!("{:x}", datanexus_model::time::now_ns());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let url = format!("http://{addr}");
        let client_id = format!("bench-{run}-{i}");
        tasks.push(tokio::spawn(one_stream(
            url,
            client_id,
            budget.clone(),
            deadline,
        )));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    Ok(Outcome {
        hist,
        secs: start.elapsed().as_secs_f64(),
    })
}

async fn one_stream(
    url: String,
    client_id: String,
    budget: Arc<AtomicU64>,
    deadline: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut client = NimbusServiceClient::connect(url.clone())
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let (tx, rx) = mpsc::channel(4);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("client_id", client_id.parse()?);
    let mut responses = client.process_event(req).await?.into_inner();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut n: i32 = 0;
    while Instant::now() < deadline && take_one(&budget) {
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
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    Ok(hist)
}

fn take_one(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
        .is_ok()
}
