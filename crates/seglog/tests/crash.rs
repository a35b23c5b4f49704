//! kill -9 harness: a child process (this test binary, selecting only
//! `child_appends_until_killed`) appends concurrently under `FsyncPolicy::Always` and prints
//! every acknowledged batch; the parent SIGKILLs it at a random moment, reopens the log and
//! checks that every acknowledged batch is there, intact, and that nothing else is, except
//! whole batches that were in flight when the child died.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datanexus_seglog::{Bytes, Log, LogOptions, Record};
use rand::Rng;

const DIR_VAR: &str = "SEGLOG_CRASH_CHILD_DIR";
const RUN_VAR: &str = "SEGLOG_CRASH_RUN";
const PARTITIONS: u32 = 3;
const TASKS: u64 = 4;

/// Records of batch `seed`: value `"{seed}:{i}/{n}:"` plus padding derived from the seed.
fn batch(seed: u64, n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: seed
                .is_multiple_of(2)
                .then(|| Bytes::from(format!("k{seed}"))),
            value: Bytes::from(format!(
                "{seed}:{i}/{n}:{}",
                "#".repeat((seed % 50) as usize)
            )),
            timestamp_ms: seed as i64,
        })
        .collect()
}

/// Parses a value back into (seed, index, count), checking the padding.
fn parse(value: &[u8]) -> Option<(u64, u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.splitn(3, ':');
    let seed: u64 = parts.next()?.parse().ok()?;
    let (i, n) = parts.next()?.split_once('/')?;
    let pad = parts.next()?;
    (pad == "#".repeat((seed % 50) as usize)).then_some(())?;
    Some((seed, i.parse().ok()?, n.parse().ok()?))
}

/// The child: appends until killed. Does nothing unless `SEGLOG_CRASH_CHILD_DIR` is set.
#[test]
fn child_appends_until_killed() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let run: u64 = std::env::var(RUN_VAR).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = Log::open(&dir, LogOptions::default()).unwrap();
        log.create_topic("t", PARTITIONS).unwrap();
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let seed = run * 10_000_000 + task * 1_000_000 + i;
                    let p = (seed % u64::from(PARTITIONS)) as u32;
                    let n = 1 + seed % 17;
                    let base = log.append("t", p, &batch(seed, n)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {p} {base} {n} {seed}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Runs the child once, kills it after `delay`, and returns its acknowledged batches
/// (partition, base, count, seed).
fn run_child(dir: &Path, run: u64, delay: Duration) -> Vec<(u32, u64, u64, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_appends_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(RUN_VAR, run.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            // A line cut by the kill has no newline: it was not fully reported. The first ack
            // may share its line with libtest's "test child_appends_until_killed ... ".
            if line.ends_with(b"\n")
                && let Some(rest) = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|l| l.split_once("ack "))
                    .map(|(_, rest)| rest)
            {
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .map(|x| x.parse().unwrap())
                    .collect();
                acks.push((f[0] as u32, f[1], f[2], f[3]));
            }
            line.clear();
        }
        acks
    });
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Checks the log against everything acknowledged so far; returns the seeds of batches
/// present but never acknowledged.
fn verify(
    dir: &Path,
    acked: &HashMap<u64, (u32, u64, u64)>,
    known_unacked: &HashSet<u64>,
) -> HashSet<u64> {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    let mut unacked = HashSet::new();
    if log.partitions("t").is_err() {
        assert!(acked.is_empty(), "acknowledged batches but no topic");
        return unacked;
    }
    let mut found: HashMap<u64, (u32, u64, u64)> = HashMap::new();
    for p in 0..PARTITIONS {
        let records = log.read("t", p, 0, usize::MAX).unwrap();
        assert_eq!(records.len() as u64, log.end_offset("t", p).unwrap());
        let mut at = 0usize;
        while let Some(first) = records.get(at) {
            let (seed, i, n) = parse(&first.value).expect("corrupt record value");
            assert_eq!(
                i, 0,
                "partition {p} offset {}: batch does not start at record 0",
                first.offset
            );
            let want = batch(seed, n);
            for (k, w) in want.iter().enumerate() {
                let r = records.get(at + k).expect("partial batch at the end");
                assert_eq!(
                    (&r.key, &r.value, r.timestamp_ms),
                    (&w.key, &w.value, w.timestamp_ms),
                    "partial, mixed or corrupt batch {seed}"
                );
            }
            assert!(
                found.insert(seed, (p, first.offset, n)).is_none(),
                "batch {seed} twice"
            );
            if !acked.contains_key(&seed) {
                unacked.insert(seed);
            }
            at += n as usize;
        }
    }
    for (seed, batch) in acked {
        assert_eq!(
            found.get(seed),
            Some(batch),
            "acknowledged batch {seed} lost or moved"
        );
    }
    let new: Vec<_> = unacked.difference(known_unacked).collect();
    assert!(
        new.len() as u64 <= TASKS,
        "more unacknowledged batches than in-flight appends: {new:?}"
    );
    log.close().unwrap();
    unacked
}

#[test]
fn acknowledged_appends_survive_sigkill_and_nothing_corrupt_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked: HashMap<u64, (u32, u64, u64)> = HashMap::new();
    let mut known_unacked = HashSet::new();
    let started = Instant::now();
    let mut runs = 0;
    while runs < 20 && started.elapsed() < Duration::from_secs(12) {
        let delay = Duration::from_millis(rng.random_range(20..250));
        for (p, base, n, seed) in run_child(dir.path(), runs, delay) {
            assert!(acked.insert(seed, (p, base, n)).is_none());
        }
        known_unacked = verify(dir.path(), &acked, &known_unacked);
        runs += 1;
    }
    assert!(runs >= 3, "only {runs} runs fit in the time budget");
    assert!(!acked.is_empty(), "the child never acknowledged anything");
    eprintln!("{runs} runs, {} acknowledged batches", acked.len());
}
