//! `datanexus export-consume`: the large-dataset-delivery seed's client. It reads a
//! topic as a member of a consumer group and, per record, prints it or calls an HTTP
//! URL (`POST`, the record's value as the body) with at most `--workers` calls at
//! once, retrying a failed call with backoff. Offsets are committed only for records
//! handled (the broker's consumer commits the contiguous acknowledged prefix), so a
//! stop — SIGINT/SIGTERM, `--limit`, `--idle-timeout`, or a call that failed after
//! its retries — loses nothing: the group's next member starts after what was handled.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use datanexus_broker::kafka::{KafkaBroker, KafkaOptions};
use datanexus_broker::{
    Broker, Consumer, ConsumerOptions, Delivery, ErrorKind, Position, RecordId,
};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::bench::ingest::encode_query_value;
use crate::cli::ExportConsumeArgs;

/// Records asked for per poll, per worker.
const POLL_PER_WORKER: usize = 64;

/// How often the group hears from this member while calls run (its session timeout is
/// 10 s).
const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long one call may take before it counts as failed (and is retried).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) async fn run(args: ExportConsumeArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.http_url_fmt
        && !url.starts_with("http://")
    {
        bail!("--http-url-fmt {url:?}: only http:// URLs are supported");
    }
    let workers = args.workers.max(1);
    let broker = KafkaBroker::open(KafkaOptions {
        bootstrap_servers: args.bootstrap_servers.clone(),
        client_id: "datanexus-export-consume".to_owned(),
        ..KafkaOptions::default()
    })?;
    let member = format!("export-consume-{}", std::process::id());
    let consumer = broker
        .subscribe(
            &args.topic,
            &args.group,
            &member,
            ConsumerOptions {
                // A record is handed out again only if it was not handled for this long.
                lease_timeout: Duration::from_secs(600),
                session_timeout: Duration::from_secs(10),
            },
        )
        .await
        .with_context(|| format!("cannot join group {:?} on {:?}", args.group, args.topic))?;
    // One small request per record: no Nagle delay, and a pooled connection per worker.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(workers)
        .build(connector);
    let stopping = Arc::new(AtomicBool::new(false));
    {
        let stopping = Arc::clone(&stopping);
        tokio::spawn(async move {
            shutdown_signal().await;
            stopping.store(true, Ordering::Relaxed);
        });
    }
    let limit = args.limit.unwrap_or(u64::MAX);
    let ended = match &args.http_url_fmt {
        None => print_records(consumer.as_ref(), limit, args.idle_timeout, &stopping).await?,
        Some(fmt) => {
            let calls = Calls {
                client: &client,
                fmt,
                retries: args.retries,
                workers,
            };
            calls
                .run(consumer.as_ref(), limit, args.idle_timeout, &stopping)
                .await?
        }
    };
    let (handled, failed) = ended;
    consumer.close().await?;
    eprintln!("handled {handled} records of {:?}", args.topic);
    match failed {
        Some(e) => {
            Err(e.context("stopped: a call failed after its retries (its record is not committed)"))
        }
        None => Ok(()),
    }
}

/// How many records were handled, and the call that failed (if one did).
type Ended = (u64, Option<anyhow::Error>);

/// Prints records as JSON lines, acknowledging each batch once printed.
async fn print_records(
    consumer: &dyn Consumer,
    limit: u64,
    idle_timeout: Option<Duration>,
    stopping: &AtomicBool,
) -> anyhow::Result<Ended> {
    let stdout = std::io::stdout();
    let mut handled = 0u64;
    let mut last_record = Instant::now();
    while handled < limit && !stopping.load(Ordering::Relaxed) {
        let want = usize::try_from(limit - handled)
            .unwrap_or(usize::MAX)
            .min(POLL_PER_WORKER * 16);
        let batch = consumer.poll(want, Duration::from_millis(200)).await?;
        if batch.is_empty() {
            if idle_timeout.is_some_and(|t| last_record.elapsed() >= t) {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        let mut out = stdout.lock();
        for d in &batch {
            writeln!(out, "{}", render(d))?;
        }
        out.flush()?;
        drop(out);
        let done: Vec<RecordId> = batch.iter().map(|d| d.id).collect();
        consumer.ack(&done).await?;
        handled += done.len() as u64;
    }
    Ok((handled, None))
}

/// Calls the URL per record, `workers` at once, as a pipeline: records are polled
/// while calls run, and each record is acknowledged once its call succeeded (the
/// consumer commits the contiguous acknowledged prefix), so one slow or retried call
/// holds back no other.
struct Calls<'a> {
    client: &'a HttpClient,
    fmt: &'a str,
    retries: u32,
    workers: usize,
}

impl Calls<'_> {
    async fn run(
        &self,
        consumer: &dyn Consumer,
        limit: u64,
        idle_timeout: Option<Duration>,
        stopping: &AtomicBool,
    ) -> anyhow::Result<Ended> {
        let (mut handled, mut taken, mut failed) = (0u64, 0u64, None::<anyhow::Error>);
        let mut waiting: VecDeque<Delivery> = VecDeque::new();
        let mut running = FuturesUnordered::new();
        let mut done: Vec<RecordId> = Vec::new();
        let mut last_record = Instant::now();
        loop {
            let starting = failed.is_none() && !stopping.load(Ordering::Relaxed);
            // Keep a few batches' worth of records ready.
            if starting && taken < limit && waiting.len() < self.workers * POLL_PER_WORKER {
                let idle = running.is_empty() && waiting.is_empty();
                let want = usize::try_from(limit - taken)
                    .unwrap_or(usize::MAX)
                    .min(self.workers * POLL_PER_WORKER);
                let wait = Duration::from_millis(if idle { 200 } else { 0 });
                let batch = consumer.poll(want, wait).await?;
                if batch.is_empty() {
                    if idle && idle_timeout.is_some_and(|t| last_record.elapsed() >= t) {
                        break;
                    }
                } else {
                    last_record = Instant::now();
                }
                taken += batch.len() as u64;
                waiting.extend(batch);
            }
            while starting && running.len() < self.workers {
                let Some(d) = waiting.pop_front() else { break };
                running.push(async move {
                    let outcome = call(self.client, self.fmt, &d, self.retries).await;
                    (d.id, outcome)
                });
            }
            if running.is_empty() {
                if !starting || (taken >= limit && waiting.is_empty()) {
                    break;
                }
                continue;
            }
            // At least one call ends (telling the group this member is alive while
            // calls take long); then every other that already has.
            let mut next = loop {
                tokio::select! {
                    next = running.next() => break next,
                    () = tokio::time::sleep(HEARTBEAT) => consumer.heartbeat().await?,
                }
            };
            while let Some((id, outcome)) = next {
                match outcome {
                    Ok(()) => done.push(id),
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
                next = running.next().now_or_never().flatten();
            }
            if done.len() >= 256 || running.is_empty() {
                handled += ack(consumer, &done).await?;
                done.clear();
            }
        }
        handled += ack(consumer, &done).await?;
        Ok((handled, failed))
    }
}

/// Acknowledges `done`; returns how many. Records the group moved to another member
/// meanwhile (a rebalance) are not an error: that member reads them again from the
/// last commit (at least once).
async fn ack(consumer: &dyn Consumer, done: &[RecordId]) -> anyhow::Result<u64> {
    match consumer.ack(done).await {
        Ok(()) => Ok(done.len() as u64),
        Err(e) if e.kind() == ErrorKind::Fenced => {
            eprintln!("warning: {e}: another member of the group handles them again");
            Ok(0)
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A record as a JSON line: the value as text when it is UTF-8, else base64-free hex.
fn render(d: &Delivery) -> serde_json::Value {
    let offset = match d.id.position {
        Position::Offset(o) => json!(o),
        Position::StreamId { ms, seq } => json!(format!("{ms}-{seq}")),
    };
    let text = |b: &Bytes| match std::str::from_utf8(b) {
        Ok(s) => json!(s),
        Err(_) => json!({"hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>()}),
    };
    json!({
        "partition": d.id.partition,
        "offset": offset,
        "timestamp_ms": d.timestamp_ms,
        "key": d.key.as_ref().map(text),
        "value": text(&d.value),
    })
}

/// The URL of `d`: the placeholders of `fmt` replaced.
fn url_of(fmt: &str, d: &Delivery) -> String {
    let key = d
        .key
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    let offset = match d.id.position {
        Position::Offset(o) => o.to_string(),
        Position::StreamId { ms, seq } => format!("{ms}-{seq}"),
    };
    fmt.replace("{key}", &encode_query_value(&key))
        .replace("{partition}", &d.id.partition.to_string())
        .replace("{offset}", &offset)
        .replace("{timestamp}", &d.timestamp_ms.to_string())
}

/// POSTs the record's value to its URL: a 2xx answer handles it; anything else is
/// retried `retries` times with backoff (100 ms doubling, at most 5 s).
async fn call(client: &HttpClient, fmt: &str, d: &Delivery, retries: u32) -> anyhow::Result<()> {
    let url = url_of(fmt, d);
    let mut attempt = 0u32;
    loop {
        let request = hyper::Request::post(&url)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(d.value.clone()))
            .with_context(|| format!("invalid URL {url:?}"))?;
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, client.request(request)).await {
            Err(_) => format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
            Ok(Err(e)) => format!("{e}"),
            Ok(Ok(response)) => {
                let status = response.status();
                let _ = tokio::time::timeout(CALL_TIMEOUT, response.into_body().collect()).await;
                if status.is_success() {
                    return Ok(());
                }
                format!("answered {status}")
            }
        };
        if attempt >= retries {
            bail!("POST {url}: {outcome} ({} attempts)", attempt + 1);
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis((100u64 << attempt.min(6)).min(5_000))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_placeholders_are_replaced_and_encoded() {
        let d = Delivery {
            id: RecordId::offset(2, 41),
            key: Some(Bytes::from_static(b"eu west,h1")),
            value: Bytes::from_static(b"{}"),
            timestamp_ms: 1_700_000_000_000,
            delivery_count: 1,
        };
        assert_eq!(
            url_of(
                "http://h:1/r?k={key}&p={partition}&o={offset}&t={timestamp}",
                &d
            ),
            "http://h:1/r?k=eu%20west%2Ch1&p=2&o=41&t=1700000000000"
        );
        assert_eq!(render(&d)["key"], "eu west,h1");
    }
}
