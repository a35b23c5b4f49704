//! The ingest hot path's pure parts: parsing InfluxDB line protocol (the compare.sh
//! workload's lines: 10,000 series, a host and a region tag, one float field) and the
//! `metrics` topic record codec (encode and decode of the resulting points). Throughput is
//! per line / per point; `cargo bench -p datanexus-model --bench codec`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datanexus_model::codec::{decode_point, encode_point};
use datanexus_model::lineproto::{Precision, parse};
use datanexus_model::{Limits, Point};

const LINES: usize = 5_000;
const T0: i64 = 1_700_000_000_000_000_000;

/// A batch of the compare.sh workload: `bench,host=host-N,region=region-M value=V ts`.
fn body() -> String {
    let mut out = String::new();
    for i in 0..LINES {
        let series = i % 10_000;
        out.push_str(&format!(
            "bench,host=host-{series},region=region-{} value={}.{} {}\n",
            series % 10,
            i * 7 % 1000,
            i % 100,
            T0 + i as i64 * 1_000_000_000
        ));
    }
    out
}

fn bench(c: &mut Criterion) {
    let text = body();
    let limits = Limits::default();
    let mut group = c.benchmark_group("line protocol");
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("parse 5,000 lines", |b| {
        b.iter(|| parse(black_box(&text), Precision::Nanoseconds, T0, &limits).unwrap());
    });
    group.finish();

    let points: Vec<Point> = parse(&text, Precision::Nanoseconds, T0, &limits).unwrap();
    let encoded: Vec<Vec<u8>> = points
        .iter()
        .map(|p| {
            let mut buf = Vec::new();
            encode_point(p, &mut buf);
            buf
        })
        .collect();
    let mut group = c.benchmark_group("record codec");
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("encode 5,000 points", |b| {
        let mut buf = Vec::with_capacity(256);
        b.iter(|| {
            for p in &points {
                buf.clear();
                encode_point(black_box(p), &mut buf);
            }
        });
    });
    group.bench_function("decode 5,000 points", |b| {
        b.iter(|| {
            for bytes in &encoded {
                black_box(decode_point(black_box(bytes)).unwrap());
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
