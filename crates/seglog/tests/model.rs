//! Model-based test: random appends, reads, polls, acks, nacks and reboots, checked against
//! an in-memory model.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "support/helpers.rs"]
mod helpers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use datanexus_seglog::{Bytes, Consumer, FsyncPolicy, GroupOptions, Log, LogOptions, Record};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PARTITIONS: u32 = 3;

#[derive(Default)]
struct Model {
    /// Values appended per partition (index = offset).
    data: Vec<Vec<String>>,
    committed: Vec<u64>,
    /// Acked offsets at or above the committed offset.
    acked: Vec<BTreeSet<u64>>,
    /// Delivered, not yet settled: (partition, offset).
    in_flight: BTreeSet<(u32, u64)>,
}

struct Harness {
    rng: StdRng,
    options: LogOptions,
    log: Log,
    consumer: Consumer,
    model: Model,
    counter: u64,
}

fn open(dir: &Path, options: &LogOptions) -> (Log, Consumer) {
    let log = Log::open(dir, options.clone()).unwrap();
    log.create_topic("t", PARTITIONS).unwrap();
    let consumer = log
        .consumer("t", "g", "c", GroupOptions::default())
        .unwrap();
    (log, consumer)
}

impl Harness {
    async fn append(&mut self) {
        let p = self.rng.random_range(0..PARTITIONS);
        let n = self.rng.random_range(1..6);
        let mut records = Vec::new();
        for _ in 0..n {
            self.counter += 1;
            let value = format!(
                "p{p}-v{}-{}",
                self.counter,
                "x".repeat(self.rng.random_range(0..40))
            );
            records.push(Record {
                key: self
                    .rng
                    .random_bool(0.5)
                    .then(|| Bytes::from(format!("k{}", self.counter))),
                value: Bytes::from(value),
                timestamp_ms: self.counter as i64,
            });
        }
        let base = self.log.append("t", p, &records).await.unwrap();
        // Under `Interval` an append is acknowledged before readers may see it (after the
        // next background fsync); the model reads right away, so wait for visibility.
        let end = base + records.len() as u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.log.end_offset("t", p).unwrap() < end && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let data = &mut self.model.data[p as usize];
        assert_eq!(base, data.len() as u64, "dense offsets");
        data.extend(
            records
                .iter()
                .map(|r| String::from_utf8(r.value.to_vec()).unwrap()),
        );
    }

    fn read(&mut self) {
        let p = self.rng.random_range(0..PARTITIONS);
        let data = &self.model.data[p as usize];
        let from = self.rng.random_range(0..=data.len());
        let max = self.rng.random_range(1..20);
        let got = self.log.read("t", p, from as u64, max).unwrap();
        let want = &data[from..(from + max).min(data.len())];
        let got_values: Vec<String> = got
            .iter()
            .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
            .collect();
        assert_eq!(got_values, want, "read p{p} from {from} max {max}");
        assert!(got.iter().zip(from as u64..).all(|(r, o)| r.offset == o));
    }

    async fn poll(&mut self) {
        let max = self.rng.random_range(1..30);
        let got = self.consumer.poll(max, Duration::ZERO).await.unwrap();
        assert!(got.len() <= max);
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for d in &got {
            let p = d.partition as usize;
            assert_eq!(
                String::from_utf8(d.value.to_vec()).unwrap(),
                self.model.data[p][d.offset as usize]
            );
            assert!(
                d.offset >= self.model.committed[p],
                "delivered committed offset"
            );
            assert!(
                !self.model.acked[p].contains(&d.offset),
                "delivered acked offset"
            );
            assert!(
                self.model.in_flight.insert((d.partition, d.offset)),
                "double lease"
            );
            assert!(
                last.insert(d.partition, d.offset)
                    .is_none_or(|prev| prev < d.offset)
            );
        }
    }

    async fn settle(&mut self, ack: bool) {
        let p = self.rng.random_range(0..PARTITIONS);
        let mine: Vec<u64> = self
            .model
            .in_flight
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        let chosen: Vec<u64> = mine
            .into_iter()
            .filter(|_| self.rng.random_bool(0.6))
            .collect();
        if ack {
            self.consumer.ack(p, &chosen).await.unwrap();
        } else {
            self.consumer.nack(p, &chosen).await.unwrap();
        }
        for o in &chosen {
            self.model.in_flight.remove(&(p, *o));
            if ack {
                self.model.acked[p as usize].insert(*o);
            }
        }
        let (committed, acked) = (
            &mut self.model.committed[p as usize],
            &mut self.model.acked[p as usize],
        );
        while acked.remove(committed) {
            *committed += 1;
        }
        assert_eq!(self.log.committed("t", "g", p).unwrap(), *committed);
    }

    fn reboot(&mut self, dir: &Path) {
        self.consumer.close().unwrap();
        self.log.close().unwrap();
        let (log, consumer) = open(dir, &self.options);
        self.log = log;
        self.consumer = consumer;
        // Leases and acks above a gap are not persisted: those records come back.
        self.model.in_flight.clear();
        for acked in &mut self.model.acked {
            acked.clear();
        }
        for p in 0..PARTITIONS {
            let data = &self.model.data[p as usize];
            assert_eq!(self.log.end_offset("t", p).unwrap(), data.len() as u64);
            assert_eq!(
                self.log.read("t", p, 0, usize::MAX).unwrap().len(),
                data.len()
            );
            assert_eq!(
                self.log.committed("t", "g", p).unwrap(),
                self.model.committed[p as usize]
            );
        }
    }
}

async fn run(seed: u64, fsync: FsyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        fsync,
        fsync_interval: Duration::from_millis(2),
        max_segment_bytes: 700,
        index_interval_bytes: 100,
        ..LogOptions::default()
    };
    let (log, consumer) = open(dir.path(), &options);
    let mut h = Harness {
        rng: StdRng::seed_from_u64(seed),
        options,
        log,
        consumer,
        model: Model {
            data: vec![Vec::new(); PARTITIONS as usize],
            committed: vec![0; PARTITIONS as usize],
            acked: vec![BTreeSet::new(); PARTITIONS as usize],
            in_flight: BTreeSet::new(),
        },
        counter: 0,
    };
    for _ in 0..250 {
        match h.rng.random_range(0..100) {
            0..35 => h.append().await,
            35..50 => h.read(),
            50..70 => h.poll().await,
            70..85 => h.settle(true).await,
            85..92 => h.settle(false).await,
            _ => h.reboot(dir.path()),
        }
    }
    h.reboot(dir.path());
    assert!(
        h.model.committed.iter().sum::<u64>() > 0,
        "seed {seed} committed nothing"
    );
}

#[tokio::test]
async fn random_operations_with_reboots_match_the_model_under_fsync_always() {
    for seed in 0..4 {
        run(seed, FsyncPolicy::Always).await;
    }
}

#[tokio::test]
async fn random_operations_with_reboots_match_the_model_under_fsync_never() {
    for seed in 100..104 {
        run(seed, FsyncPolicy::Never).await;
    }
}

#[tokio::test]
async fn random_operations_with_reboots_match_the_model_under_fsync_interval() {
    for seed in 200..203 {
        run(seed, FsyncPolicy::Interval).await;
    }
}
