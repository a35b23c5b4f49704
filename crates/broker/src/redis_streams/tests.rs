//! Tests against a real redis-server: the conformance suite, then Redis-specific checks.
//!
//! The server is the one at `TEST_REDIS_URL` when set (`.ci/run` starts one),
//! else a private `redis-server` from `PATH` on a free port, killed when the test ends.
//! Without either, a test fails under `CI=true` and is skipped otherwise. Every test
//! uses its own key prefix, so tests can share a server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::conformance::{records, unique, values};
use crate::testkit::{self, ServerProcess, free_port, start_on_free_port};
use crate::{Bytes, ErrorKind};

const URL_VAR: &str = "TEST_REDIS_URL";

/// Keeps the private server (if any) alive for the test.
struct Fixture {
    _server: Option<ServerProcess>,
    url: String,
    prefix: String,
}

async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

async fn answers_ping(url: &str) -> bool {
    let ping = async {
        let mut conn = connect(url).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    )
}

/// Starts `redis-server` (with `extra` arguments) on a free port; `None` if it is not
/// on `PATH` or never answers. `url_auth` goes before the host in the URL it returns.
async fn spawn_server_with(extra: &[&str], url_auth: &str) -> Option<(ServerProcess, String)> {
    let url = |port: u16| format!("redis://{url_auth}127.0.0.1:{port}/0");
    let start = |port: u16| {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(ServerProcess::new(child, Some(dir)))
    };
    let ready = |port: u16| {
        let url = url(port);
        async move { answers_ping(&url).await }
    };
    let (server, port) = start_on_free_port(start, ready, Duration::from_secs(5)).await?;
    Some((server, url(port)))
}

async fn spawn_server() -> Option<(ServerProcess, String)> {
    spawn_server_with(&[], "").await
}

/// Fails under CI, else reports the skip.
fn skip(what: &str) {
    testkit::skip(what, &format!("set {URL_VAR} or put redis-server on PATH"));
}

/// The server to test against, or `None` to skip (never under CI).
async fn server() -> Option<(Option<ServerProcess>, String)> {
    if let Ok(url) = std::env::var(URL_VAR) {
        assert!(
            answers_ping(&url).await,
            "{URL_VAR}={} does not answer PING",
            redact_url(&url)
        );
        return Some((None, url));
    }
    if let Some((server, url)) = spawn_server().await {
        return Some((Some(server), url));
    }
    skip("redis");
    None
}

async fn open_broker() -> Option<(Fixture, RedisBroker)> {
    let (server, url) = server().await?;
    let prefix = unique("dn-test");
    let broker = RedisBroker::open(RedisOptions {
        url: url.clone(),
        stream_prefix: prefix.clone(),
        ..RedisOptions::default()
    })
    .await
    .expect("open");
    let fixture = Fixture {
        _server: server,
        url,
        prefix,
    };
    Some((fixture, broker))
}

async fn open() -> Option<(Fixture, Arc<dyn Broker>)> {
    let (fixture, broker) = open_broker().await?;
    Some((fixture, Arc::new(broker)))
}

fn options() -> ConsumerOptions {
    ConsumerOptions {
        lease_timeout: Duration::from_secs(2),
        session_timeout: Duration::from_secs(1),
    }
}

crate::conformance::conformance_suite!(open, options());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_consumers_records_go_to_a_live_one_once_its_heartbeat_expires() {
    let Some((f, b)) = open_broker().await else {
        return;
    };
    let (topic, group) = (unique("crash"), unique("g"));
    // A lease far beyond the test: only the heartbeat can hand the work over.
    let opts = ConsumerOptions {
        lease_timeout: Duration::from_secs(600),
        session_timeout: Duration::from_secs(1),
    };
    b.ensure_topic(&topic, 2).await.unwrap();
    b.produce(&topic, records(10, 2)).await.unwrap();
    let doomed = b
        .subscribe(&topic, &group, "doomed", opts.clone())
        .await
        .unwrap();
    assert_eq!(
        doomed
            .poll(100, Duration::from_secs(1))
            .await
            .unwrap()
            .len(),
        10
    );
    drop(doomed); // no close: a crash
    let survivor = b.subscribe(&topic, &group, "survivor", opts).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    while values(&got).len() < 10 && start.elapsed() < Duration::from_secs(10) {
        let batch = survivor
            .poll(100, Duration::from_millis(200))
            .await
            .unwrap();
        let ids: Vec<RecordId> = batch.iter().map(|d| d.id).collect();
        survivor.ack(&ids).await.unwrap();
        got.extend(batch);
    }
    assert_eq!(
        values(&got).len(),
        10,
        "the crashed consumer's records never came"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
    assert!(got.iter().all(|d| d.delivery_count >= 2), "{got:?}");
    // Once it has nothing pending, the dead member leaves the group.
    let mut conn = connect(&f.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        survivor.poll(1, Duration::from_millis(100)).await.unwrap();
        let key = format!("{}:{topic}:0", f.prefix);
        let info: redis::Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&key)
            .arg(&group)
            .query_async(&mut conn)
            .await
            .unwrap();
        let names: Vec<String> = reply::consumers(&info)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        if !names.contains(&"doomed".to_owned()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead member still in the group: {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_gets_its_own_pending_records_first() {
    let Some((_f, b)) = open_broker().await else {
        return;
    };
    let (topic, group) = (unique("restart"), unique("g"));
    let opts = ConsumerOptions {
        lease_timeout: Duration::from_secs(600),
        session_timeout: Duration::from_secs(600),
    };
    b.ensure_topic(&topic, 1).await.unwrap();
    let first = records(5, 1);
    b.produce(&topic, first.clone()).await.unwrap();
    let c = b
        .subscribe(&topic, &group, "c1", opts.clone())
        .await
        .unwrap();
    assert_eq!(c.poll(100, Duration::from_secs(1)).await.unwrap().len(), 5);
    drop(c);
    let later: Vec<ProduceRecord> = (0..5)
        .map(|i| ProduceRecord {
            value: Bytes::from(format!("later{i}")),
            ..first[0].clone()
        })
        .collect();
    b.produce(&topic, later).await.unwrap();
    let c = b.subscribe(&topic, &group, "c1", opts).await.unwrap();
    let again = c.poll(5, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        values(&again),
        first.iter().map(|r| r.value.clone()).collect()
    );
    assert!(again.iter().all(|d| d.delivery_count == 2), "{again:?}");
    let new = c.poll(100, Duration::from_secs(1)).await.unwrap();
    assert_eq!(new.len(), 5);
    assert!(
        new.iter()
            .all(|d| d.value.starts_with(b"later") && d.delivery_count == 1)
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_records_go_back_to_the_partitions_owner_and_to_the_next_one_on_close() {
    let Some((_f, b)) = open_broker().await else {
        return;
    };
    let (topic, group) = (unique("nack2"), unique("g"));
    let opts = ConsumerOptions {
        lease_timeout: Duration::from_secs(600),
        session_timeout: Duration::from_secs(600),
    };
    b.ensure_topic(&topic, 1).await.unwrap();
    b.produce(&topic, records(5, 1)).await.unwrap();
    let c1 = b
        .subscribe(&topic, &group, "c1", opts.clone())
        .await
        .unwrap();
    let got = c1.poll(100, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 5);
    let ids: Vec<RecordId> = got.iter().map(|d| d.id).collect();
    c1.nack(&ids).await.unwrap();
    // c2 owns no partition (c1 keeps the only one): it gets nothing.
    let c2 = b.subscribe(&topic, &group, "c2", opts).await.unwrap();
    assert!(
        c2.poll(100, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    let again = c1.poll(100, Duration::from_secs(1)).await.unwrap();
    assert_eq!(values(&again), values(&got));
    assert!(again.iter().all(|d| d.delivery_count == 2), "{again:?}");
    // Closing hands the partition and its unacknowledged records over at once, even
    // with a session timeout far beyond the test.
    c1.nack(&ids).await.unwrap();
    c1.close().await.unwrap();
    let start = Instant::now();
    let mut taken = Vec::new();
    while taken.len() < 5 && start.elapsed() < Duration::from_secs(3) {
        taken.extend(c2.poll(100, Duration::from_millis(100)).await.unwrap());
    }
    assert_eq!(values(&taken), values(&got));
    assert!(taken.iter().all(|d| d.delivery_count >= 3), "{taken:?}");
}

/// Values `v{from}..v{from + n}`, record `i` in partition `i % partitions`.
fn records_from(from: usize, n: usize, partitions: u32) -> Vec<ProduceRecord> {
    (from..from + n)
        .map(|i| ProduceRecord {
            partition: Some(i as u32 % partitions),
            key: None,
            value: Bytes::from(format!("v{i}")),
            timestamp_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

/// Polls and acks until `stop` says so, returning every delivery in order.
fn spawn_poller(
    c: Arc<dyn Consumer>,
    batch: usize,
    stop: Arc<dyn Fn() -> bool + Send + Sync>,
    all: Arc<std::sync::Mutex<BTreeSet<Bytes>>>,
) -> tokio::task::JoinHandle<Vec<crate::Delivery>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while !stop() {
            let ds = c.poll(batch, Duration::from_millis(100)).await.unwrap();
            if !ds.is_empty() {
                c.ack(&ds.iter().map(|d| d.id).collect::<Vec<_>>())
                    .await
                    .unwrap();
            }
            all.lock()
                .unwrap()
                .extend(ds.iter().map(|d| d.value.clone()));
            got.extend(ds);
        }
        got
    })
}

/// Per partition, the positions delivered, in delivery order.
fn by_partition_in_order(
    ds: &[crate::Delivery],
) -> std::collections::BTreeMap<u32, Vec<crate::Position>> {
    let mut out: std::collections::BTreeMap<u32, Vec<crate::Position>> = Default::default();
    for d in ds {
        out.entry(d.id.partition).or_default().push(d.id.position);
    }
    out
}

fn assert_increasing(who: &str, parts: &std::collections::BTreeMap<u32, Vec<crate::Position>>) {
    for (p, positions) in parts {
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{who} got partition {p} out of order: {positions:?}"
        );
    }
}

async fn owners(f: &Fixture, topic: &str, group: &str, partitions: u32) -> Vec<Option<String>> {
    let mut conn = connect(&f.url).await.unwrap();
    let mut out = Vec::new();
    for p in 0..partitions {
        let key = format!("{}:own:{topic}:{group}:{p}", f.prefix);
        out.push(
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut conn)
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_a_group_own_disjoint_partitions_and_get_each_in_order() {
    let Some((_f, b)) = open_broker().await else {
        return;
    };
    let (topic, group) = (unique("owned"), unique("g"));
    b.ensure_topic(&topic, 4).await.unwrap();
    let a: Arc<dyn Consumer> =
        Arc::from(b.subscribe(&topic, &group, "a", options()).await.unwrap());
    let c: Arc<dyn Consumer> =
        Arc::from(b.subscribe(&topic, &group, "b", options()).await.unwrap());
    let all = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let start = Instant::now();
    let stop: Arc<dyn Fn() -> bool + Send + Sync> = {
        let all = all.clone();
        Arc::new(move || {
            all.lock().unwrap().len() >= 400 || start.elapsed() > Duration::from_secs(30)
        })
    };
    let pa = spawn_poller(a.clone(), 7, stop.clone(), all.clone());
    let pb = spawn_poller(c.clone(), 7, stop, all.clone());
    // Produced while both poll, in batches.
    for batch in 0..8 {
        b.produce(&topic, records_from(batch * 50, 50, 4))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (by_a, by_b) = (pa.await.unwrap(), pb.await.unwrap());
    let want: BTreeSet<Bytes> = records_from(0, 400, 4)
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(*all.lock().unwrap(), want, "every record must be delivered");
    let (parts_a, parts_b) = (by_partition_in_order(&by_a), by_partition_in_order(&by_b));
    let (ka, kb): (BTreeSet<u32>, BTreeSet<u32>) = (
        parts_a.keys().copied().collect(),
        parts_b.keys().copied().collect(),
    );
    assert!(
        ka.is_disjoint(&kb),
        "a partition was read by both: a={ka:?} b={kb:?}"
    );
    assert_eq!(
        ka.len(),
        2,
        "partitions are shared evenly: a={ka:?} b={kb:?}"
    );
    assert_increasing("a", &parts_a);
    assert_increasing("b", &parts_b);
    a.close().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_partitions_move_with_its_pending_records_first() {
    let Some((f, b)) = open_broker().await else {
        return;
    };
    let (topic, group) = (unique("takeover"), unique("g"));
    // A lease far beyond the test: only the session timeout moves the partitions.
    let opts = ConsumerOptions {
        lease_timeout: Duration::from_secs(600),
        session_timeout: Duration::from_secs(1),
    };
    b.ensure_topic(&topic, 4).await.unwrap();
    let doomed = b
        .subscribe(&topic, &group, "doomed", opts.clone())
        .await
        .unwrap();
    let survivor = b.subscribe(&topic, &group, "survivor", opts).await.unwrap();
    b.produce(&topic, records_from(0, 40, 4)).await.unwrap();
    // Members sort as [doomed, survivor]: doomed owns partitions 0 and 2.
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.len() < 20 && Instant::now() < deadline {
        first.extend(doomed.poll(100, Duration::from_millis(200)).await.unwrap());
    }
    assert_eq!(first.len(), 20, "{first:?}");
    assert!(first.iter().all(|d| d.id.partition % 2 == 0), "{first:?}");
    // It acks the first 3 of each partition, then crashes with the rest pending.
    let acked: Vec<&crate::Delivery> = [0, 2]
        .iter()
        .flat_map(|p| first.iter().filter(move |d| d.id.partition == *p).take(3))
        .collect();
    doomed
        .ack(&acked.iter().map(|d| d.id).collect::<Vec<_>>())
        .await
        .unwrap();
    let acked: BTreeSet<Bytes> = acked.iter().map(|d| d.value.clone()).collect();
    let mut got = survivor
        .poll(100, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(got.iter().all(|d| d.id.partition % 2 == 1), "{got:?}");
    survivor
        .ack(&got.iter().map(|d| d.id).collect::<Vec<_>>())
        .await
        .unwrap();
    drop(doomed);
    let dropped = Instant::now();
    b.produce(&topic, records_from(40, 40, 4)).await.unwrap();
    let want: BTreeSet<Bytes> = records_from(0, 80, 4)
        .into_iter()
        .map(|r| r.value)
        .filter(|v| !acked.contains(v))
        .collect();
    let mut took_over = None;
    while values(&got) != want && dropped.elapsed() < Duration::from_secs(10) {
        let ds = survivor.poll(5, Duration::from_millis(100)).await.unwrap();
        if took_over.is_none() && ds.iter().any(|d| d.id.partition % 2 == 0) {
            took_over = Some(dropped.elapsed());
        }
        survivor
            .ack(&ds.iter().map(|d| d.id).collect::<Vec<_>>())
            .await
            .unwrap();
        got.extend(ds);
    }
    assert_eq!(values(&got), want, "records were lost");
    let took_over = took_over.unwrap();
    assert!(took_over < Duration::from_secs(3), "took {took_over:?}");
    let parts = by_partition_in_order(&got);
    assert_increasing("the survivor", &parts);
    for p in [0u32, 2] {
        let ds: Vec<&crate::Delivery> = got.iter().filter(|d| d.id.partition == p).collect();
        assert_eq!(ds.len(), 17, "partition {p}: {ds:?}");
        // The dead member's 7 pending records come first (redelivered), then the new.
        assert!(ds[..7].iter().all(|d| d.delivery_count >= 2), "{ds:?}");
        assert!(ds[7..].iter().all(|d| d.delivery_count == 1), "{ds:?}");
    }
    assert_eq!(
        owners(&f, &topic, &group, 4).await,
        vec![Some("survivor".to_owned()); 4]
    );
    survivor.close().await.unwrap();
    assert_eq!(owners(&f, &topic, &group, 4).await, vec![None; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_consumer_gets_its_share_of_the_partitions_within_a_session() {
    let Some((f, b)) = open_broker().await else {
        return;
    };
    let (topic, group) = (unique("join"), unique("g"));
    b.ensure_topic(&topic, 4).await.unwrap();
    let a: Arc<dyn Consumer> =
        Arc::from(b.subscribe(&topic, &group, "a", options()).await.unwrap());
    a.poll(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(
        owners(&f, &topic, &group, 4).await,
        vec![Some("a".to_owned()); 4]
    );
    let c: Arc<dyn Consumer> =
        Arc::from(b.subscribe(&topic, &group, "b", options()).await.unwrap());
    let joined = Instant::now();
    let (an, bn) = (Some("a".to_owned()), Some("b".to_owned()));
    let want = vec![an.clone(), bn.clone(), an, bn];
    while owners(&f, &topic, &group, 4).await != want {
        assert!(
            joined.elapsed() < Duration::from_secs(2),
            "owners after {:?}: {:?}",
            joined.elapsed(),
            owners(&f, &topic, &group, 4).await
        );
        a.poll(10, Duration::from_millis(50)).await.unwrap();
        c.poll(10, Duration::from_millis(50)).await.unwrap();
    }
    // From now on each reads only its own partitions.
    b.produce(&topic, records_from(0, 40, 4)).await.unwrap();
    let (mut by_a, mut by_b) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    while by_a.len() + by_b.len() < 40 && Instant::now() < deadline {
        by_a.extend(a.poll(100, Duration::from_millis(50)).await.unwrap());
        by_b.extend(c.poll(100, Duration::from_millis(50)).await.unwrap());
    }
    assert!(by_a.iter().all(|d| d.id.partition % 2 == 0), "{by_a:?}");
    assert!(by_b.iter().all(|d| d.id.partition % 2 == 1), "{by_b:?}");
    assert_eq!((by_a.len(), by_b.len()), (20, 20));
    a.close().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_poll_neither_delays_produce_nor_misses_new_records() {
    let Some((_f, b)) = open_broker().await else {
        return;
    };
    let topic = unique("block");
    b.ensure_topic(&topic, 4).await.unwrap();
    let c: Arc<dyn Consumer> = Arc::from(
        b.subscribe(&topic, &unique("g"), "c1", options())
            .await
            .unwrap(),
    );
    let poller = {
        let c = c.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let got = c.poll(10, Duration::from_secs(5)).await.unwrap();
            (got, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    b.produce(&topic, records(1, 4)).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "produce waited {:?}",
        start.elapsed()
    );
    let (got, waited) = poller.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        waited < Duration::from_secs(2),
        "poll returned after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topic_with_another_partition_count_fails() {
    let Some((f, b)) = open_broker().await else {
        return;
    };
    let topic = unique("count");
    b.ensure_topic(&topic, 3).await.unwrap();
    let err = b.ensure_topic(&topic, 4).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    // Also for another broker that has not cached the count.
    let other = RedisBroker::open(RedisOptions {
        url: f.url.clone(),
        stream_prefix: f.prefix.clone(),
        ..RedisOptions::default()
    })
    .await
    .unwrap();
    let err = other.ensure_topic(&topic, 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(other.partitions(&topic).await.unwrap(), 3);
    let err = b.ensure_topic("bad:name", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_only_what_every_group_acknowledged() {
    let Some((f, b)) = open_broker().await else {
        return;
    };
    let topic = unique("retention");
    b.ensure_topic(&topic, 1).await.unwrap();
    let ids = b.produce(&topic, records(10, 1)).await.unwrap();
    let fast = b.subscribe(&topic, "fast", "c", options()).await.unwrap();
    let slow = b.subscribe(&topic, "slow", "c", options()).await.unwrap();
    let mut conn = connect(&f.url).await.unwrap();
    let key = format!("{}:{topic}:0", f.prefix);
    let mut len = async || -> i64 {
        redis::cmd("XLEN")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(
        fast.poll(100, Duration::from_secs(1)).await.unwrap().len(),
        10
    );
    fast.ack(&ids[..5]).await.unwrap();
    b.enforce_retention().await.unwrap();
    assert_eq!(len().await, 10, "the slow group has read nothing");
    assert_eq!(
        slow.poll(100, Duration::from_secs(1)).await.unwrap().len(),
        10
    );
    slow.ack(&ids).await.unwrap();
    b.enforce_retention().await.unwrap();
    assert_eq!(
        len().await,
        5,
        "the fast group still holds 5 unacknowledged"
    );
    fast.ack(&ids[5..]).await.unwrap();
    b.enforce_retention().await.unwrap();
    assert_eq!(len().await, 0);
    let lag: u64 = b
        .lag(&topic, "fast")
        .await
        .unwrap()
        .iter()
        .map(|l| l.lag)
        .sum();
    assert_eq!(lag, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_broker_and_its_consumers_answer_closed() {
    let Some((_f, b)) = open_broker().await else {
        return;
    };
    let topic = unique("stop");
    b.ensure_topic(&topic, 1).await.unwrap();
    let c = b
        .subscribe(&topic, &unique("g"), "c", options())
        .await
        .unwrap();
    b.stop().await.unwrap();
    assert_eq!(
        b.produce(&topic, records(1, 1)).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(b.ready().await.unwrap_err().kind(), ErrorKind::Closed);
    let err = c.poll(1, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn calls_to_a_server_that_is_down_fail_fast_as_unavailable() {
    let b = RedisBroker::open(RedisOptions {
        url: format!("redis://127.0.0.1:{}/0", free_port()),
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        ..RedisOptions::default()
    })
    .await
    .unwrap();
    let start = Instant::now();
    let errors = [
        b.ensure_topic("t", 1).await.unwrap_err(),
        b.produce("t", records(1, 1)).await.unwrap_err(),
        b.ready().await.unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn calls_to_a_server_that_never_answers_time_out_as_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts connections and never answers.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    // Plain and TLS (the rustls provider must be in place: no panic, an error).
    for scheme in ["redis", "rediss"] {
        let b = RedisBroker::open(RedisOptions {
            url: format!("{scheme}://127.0.0.1:{port}/0"),
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_millis(500),
            ..RedisOptions::default()
        })
        .await
        .unwrap();
        let start = Instant::now();
        let err = b.produce("t", records(1, 1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{scheme}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{scheme}: took {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_and_database_of_the_url_are_used() {
    let Some((_server, url)) = spawn_server_with(&["--requirepass", "s3cret"], ":s3cret@").await
    else {
        return skip("redis-server");
    };
    let with_db = url.replace("/0", "/3");
    let b = RedisBroker::open(RedisOptions {
        url: with_db.clone(),
        stream_prefix: unique("dn-test"),
        ..RedisOptions::default()
    })
    .await
    .unwrap();
    b.ready().await.unwrap();
    b.ensure_topic("t", 1).await.unwrap();
    let mut conn = connect(&with_db).await.unwrap();
    let db3: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert!(db3 > 0, "nothing written to database 3");
    let wrong = RedisBroker::open(RedisOptions {
        url: url.replace("s3cret", "wrong"),
        ..RedisOptions::default()
    })
    .await
    .unwrap();
    let err = wrong.ready().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!err.to_string().contains("wrong"), "{err}");
}

#[test]
fn urls_are_logged_without_their_password() {
    assert_eq!(
        redact_url("redis://user:secret@host:6380/2"),
        "redis://user:***@host:6380/2"
    );
    assert_eq!(
        redact_url("rediss://:secret@host/0"),
        "rediss://:***@host/0"
    );
    assert_eq!(redact_url("redis://token@host"), "redis://***@host");
    assert_eq!(
        redact_url("redis://127.0.0.1:6379/0"),
        "redis://127.0.0.1:6379/0"
    );
    assert_eq!(redact_url("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
    let debug = format!(
        "{:?}",
        RedisOptions {
            url: "redis://u:pw@h/0".into(),
            ..RedisOptions::default()
        }
    );
    assert!(!debug.contains("pw"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_recreates_its_group_when_the_stream_is_deleted() {
    let Some((f, b)) = open_broker().await else {
        return;
    };
    let (topic, group) = (unique("deleted"), unique("g"));
    b.ensure_topic(&topic, 1).await.unwrap();
    b.produce(&topic, records(2, 1)).await.unwrap();
    let c = b.subscribe(&topic, &group, "c", options()).await.unwrap();
    let got = c.poll(10, Duration::from_secs(1)).await.unwrap();
    c.ack(&got.iter().map(|d| d.id).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut conn = connect(&f.url).await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{}:{topic}:0", f.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    b.produce(&topic, records(1, 1)).await.unwrap();
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while again.is_empty() && Instant::now() < deadline {
        again = c.poll(10, Duration::from_millis(200)).await.unwrap();
    }
    assert_eq!(again.len(), 1, "{again:?}");
}

/// TLS with a private CA made by the test: a `redis-server` with only a TLS port and a
/// certificate that CA signed; `rediss://` with `tls_ca` verifies it and works, without
/// it (the system's trust store) the connection is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("redis-server (for TLS)");
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let path = |name: &str| pki.path().join(name);
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();
    let ca_file = path("ca.pem");
    let url = |port: u16| format!("rediss://127.0.0.1:{port}/0");
    let start = |port: u16| {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(path("server.pem"))
            .arg("--tls-key-file")
            .arg(path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(path("ca.pem"))
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(ServerProcess::new(child, Some(dir)))
    };
    let options = |port: u16, tls_ca: Option<std::path::PathBuf>| RedisOptions {
        url: url(port),
        stream_prefix: unique("dn-tls"),
        tls_ca,
        ..RedisOptions::default()
    };
    let ready = |port: u16| {
        let options = options(port, Some(ca_file.clone()));
        async move {
            match RedisBroker::open(options).await {
                Ok(b) => b.ready().await.is_ok(),
                Err(_) => false,
            }
        }
    };
    let Some((_server, port)) = start_on_free_port(start, ready, Duration::from_secs(5)).await
    else {
        panic!("redis-server with TLS did not start");
    };
    let broker = RedisBroker::open(options(port, Some(ca_file.clone())))
        .await
        .unwrap();
    broker.ensure_topic("t", 1).await.unwrap();
    let ids = broker
        .produce(
            "t",
            vec![ProduceRecord {
                partition: Some(0),
                key: None,
                value: Bytes::from_static(b"over tls"),
                timestamp_ms: 1,
            }],
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    let untrusting = RedisBroker::open(options(port, None)).await.unwrap();
    let refused = untrusting
        .ready()
        .await
        .expect_err("a CA the client does not trust");
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
}
