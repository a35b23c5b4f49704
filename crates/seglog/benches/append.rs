//! Append throughput under `FsyncPolicy::Always`: batches of 1,000 records of ~100-byte
//! values, from one task and from 4 concurrent tasks (which share fsyncs: group commit).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use datanexus_seglog::{Bytes, FsyncPolicy, Log, LogOptions, Record};

const RECORDS: usize = 1_000;
const VALUE_BYTES: usize = 100;

fn batch() -> Vec<Record> {
    (0..RECORDS)
        .map(|i| Record {
            key: None,
            value: Bytes::from(format!("{i:0width$}", width = VALUE_BYTES)),
            timestamp_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

fn bench_tasks(group: &mut BenchmarkGroup<'_, WallTime>, rt: &tokio::runtime::Runtime, tasks: u32) {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        fsync: FsyncPolicy::Always,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    log.create_topic("bench", 4).unwrap();
    let records = batch();
    let name = if tasks == 1 { "1 task" } else { "4 tasks" };
    group.bench_function(name, |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut handles = Vec::new();
                for t in 0..tasks {
                    let log = log.clone();
                    let records = records.clone();
                    handles.push(tokio::spawn(async move {
                        black_box(log.append("bench", t, &records).await.unwrap())
                    }));
                }
                for h in handles {
                    h.await.unwrap();
                }
            });
        });
    });
    log.close().unwrap();
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let batch_bytes: u64 = batch().iter().map(|r| r.value.len() as u64).sum();
    for tasks in [1u32, 4] {
        let mut group = c.benchmark_group("append_records");
        group.throughput(Throughput::Elements(RECORDS as u64 * u64::from(tasks)));
        bench_tasks(&mut group, &rt, tasks);
        group.finish();
        let mut group = c.benchmark_group("append_bytes");
        group.throughput(Throughput::Bytes(batch_bytes * u64::from(tasks)));
        bench_tasks(&mut group, &rt, tasks);
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = append
}
criterion_main!(benches);
