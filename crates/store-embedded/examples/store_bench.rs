//! Rough numbers for the embedded store (not a test; run with
//! `cargo run --release -p datanexus-store-embedded --example store_bench`):
//! head memory per series, bytes on disk per sample, query and aggregate latency over
//! 1,000,000 samples in 10,000 series (timestamps 1 s apart, values a random walk).

use std::time::Instant;

use datanexus_model::{Labels, Point};
use datanexus_store::{AggregateQuery, Selector, SeriesQuery, Store, TimeRange};
use datanexus_store_embedded::{EmbeddedStore, EmbeddedStoreOptions};
use rand::Rng;

const SERIES: usize = 10_000;
const PER_SERIES: i64 = 100;
const T0: i64 = 1_700_000_000_000_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn agg(step: Option<i64>, quantiles: Vec<f64>) -> AggregateQuery {
    AggregateQuery {
        selector: Selector::metric("bench"),
        range: TimeRange::default(),
        step_ns: step,
        quantiles,
        buckets: vec![],
    }
}

async fn time<T>(label: &str, runs: usize, mut f: impl AsyncFnMut() -> T) {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(f().await);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{label}: median {:.1} ms (min {:.1})",
        times[runs / 2],
        times[0]
    );
}

/// Writes 1M samples into the head and reports speed and memory.
async fn fill(store: &EmbeddedStore) -> anyhow::Result<()> {
    let labels: Vec<Labels> = (0..SERIES)
        .map(|s| {
            Labels::new([
                ("host".into(), format!("host-{s:05}")),
                ("dc".into(), format!("dc{}", s % 4)),
            ])
        })
        .collect::<Result<_, _>>()?;
    let mut rng = rand::rng();
    let mut values = vec![100.0f64; SERIES];
    let rss0 = rss_bytes();
    let t = Instant::now();
    for i in 0..PER_SERIES {
        let batch: Vec<Point> = (0..SERIES)
            .map(|s| {
                values[s] += rng.random_range(-1.0..1.0);
                Point::sample(
                    "bench",
                    labels[s].clone(),
                    values[s],
                    T0 + i * 1_000_000_000,
                )
            })
            .collect();
        store.write_points(&batch).await?;
    }
    let write_s = t.elapsed().as_secs_f64();
    let rss1 = rss_bytes();
    println!(
        "write 1M samples into the head: {write_s:.2} s ({:.0} samples/s)",
        1e6 / write_s
    );
    println!(
        "head memory: {:.0} bytes per series (RSS delta / {SERIES}, 100 samples each)",
        (rss1 - rss0) as f64 / SERIES as f64
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), EmbeddedStoreOptions::default())?;
    fill(&store).await?;
    let t = Instant::now();
    let report = store.flush().await?;
    println!(
        "flush: {:.2} s, {} rows, {} bytes = {:.2} bytes/sample",
        t.elapsed().as_secs_f64(),
        report.rows,
        report.bytes,
        report.bytes as f64 / report.rows as f64
    );

    if let Some(keep) = std::env::var_os("STORE_BENCH_KEEP") {
        for f in store.files() {
            std::fs::copy(
                &f,
                std::path::Path::new(&keep).join(f.file_name().unwrap_or_default()),
            )?;
        }
    }
    queries(&store).await;
    drop(store);
    let t = Instant::now();
    let store = EmbeddedStore::open(dir.path(), EmbeddedStoreOptions::default())?;
    println!(
        "reopen (rebuild catalog and stats from 1M rows): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("series after reopen: {}", store.latest().await?.len());
    Ok(())
}

/// Times the queries.
async fn queries(store: &EmbeddedStore) {
    time(
        "aggregate count/sum/min/max over 1M (files)",
        7,
        async || {
            store
                .aggregate(&agg(None, vec![]))
                .await
                .map(|r| r.total.count)
        },
    )
    .await;
    time("aggregate with p50/p90/p99 over 1M", 5, async || {
        store
            .aggregate(&agg(None, vec![0.5, 0.9, 0.99]))
            .await
            .map(|r| r.total.count)
    })
    .await;
    time("aggregate with 10 s steps over 1M", 5, async || {
        store
            .aggregate(&agg(Some(10_000_000_000), vec![]))
            .await
            .map(|r| r.steps.len())
    })
    .await;
    let mut one = SeriesQuery {
        selector: Selector::metric("bench"),
        range: TimeRange::default(),
        limit: 1000,
        offset: 0,
    };
    one.selector.matchers = vec![("host".into(), "host-04242".into())];
    time("raw query of one series", 7, async || {
        store.query(&one).await.map(|r| r.total)
    })
    .await;
    let page = SeriesQuery {
        selector: Selector::metric("bench"),
        range: TimeRange::default(),
        limit: 100,
        offset: 0,
    };
    time("raw query, all series, first 100 of 1M", 5, async || {
        store.query(&page).await.map(|r| r.total)
    })
    .await;
    time("datasets", 5, async || {
        store.datasets().await.map(|d| d.len())
    })
    .await;
    time("latest (10k series)", 5, async || {
        store.latest().await.map(|d| d.len())
    })
    .await;
}
