//! `datanexus export-consume`: the large-dataset-delivery seed's client. It reads a
//! topic as a member of a consumer group and, per record, prints it or calls an HTTP
//! URL (`POST`, the record's value as the body) with at most `--workers` calls at
//! once, retrying a failed call with backoff. Offsets are committed only for records
//! handled (the broker's consumer commits the contiguous acknowledged prefix), so a
//! stop — SIGINT/SIGTERM, `--limit`, `--idle-timeout`, or a call that failed after
//! its retries — loses nothing: the group's next member starts after what was handled.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use datanexus_broker::kafka::{KafkaBroker, KafkaOptions};
use datanexus_broker::{Broker, ConsumerOptions, Delivery, Position, RecordId};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::bench::ingest::encode_query_value;
use crate::cli::ExportConsumeArgs;

/// Records asked for per poll, per worker.
const POLL_PER_WORKER: usize = 64;

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
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut stop = Box::pin(shutdown_signal());
    let (mut handled, mut failed) = (0u64, None::<anyhow::Error>);
    let mut last_record = Instant::now();
    let limit = args.limit.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    while handled < limit && failed.is_none() {
        let want = usize::try_from(limit - handled)
            .unwrap_or(usize::MAX)
            .min(workers * POLL_PER_WORKER);
        let batch = tokio::select! {
            () = &mut stop => break,
            batch = consumer.poll(want, Duration::from_millis(500)) => batch?,
        };
        if batch.is_empty() {
            if args
                .idle_timeout
                .is_some_and(|t| last_record.elapsed() >= t)
            {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        let mut done: Vec<RecordId> = Vec::with_capacity(batch.len());
        match &args.http_url_fmt {
            None => {
                let mut out = stdout.lock();
                for d in &batch {
                    writeln!(out, "{}", render(d))?;
                    done.push(d.id);
                }
                out.flush()?;
            }
            Some(fmt) => {
                let mut calls = futures::stream::iter(batch.iter().map(|d| {
                    let client = &client;
                    async move { (d.id, call(client, fmt, d, args.retries).await) }
                }))
                .buffer_unordered(workers);
                while let Some((id, result)) = calls.next().await {
                    match result {
                        Ok(()) => done.push(id),
                        Err(e) if failed.is_none() => failed = Some(e),
                        Err(_) => {}
                    }
                }
            }
        }
        handled += done.len() as u64;
        consumer.ack(&done).await?;
    }
    consumer.close().await?;
    eprintln!("handled {handled} records of {:?}", args.topic);
    match failed {
        Some(e) => {
            Err(e.context("stopped: a call failed after its retries (its record is not committed)"))
        }
        None => Ok(()),
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
        let outcome = match client.request(request).await {
            Ok(response) => {
                let status = response.status();
                let _ = response.into_body().collect().await;
                if status.is_success() {
                    return Ok(());
                }
                format!("answered {status}")
            }
            Err(e) => format!("{e}"),
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
