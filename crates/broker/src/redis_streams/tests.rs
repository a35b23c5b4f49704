//! Tests against a real redis-server: the conformance suite, then Redis-specific checks.
//!
//! The server is the one at `DATANEXUS_TEST_REDIS_URL` when set (`.ci/run` starts one),
//! else a private `redis-server` from `PATH` on a free port, killed when the test ends.
//! Without either, a test fails under `CI=true` and is skipped otherwise. Every test
//! uses its own key prefix, so tests can share a server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::conformance::unique;
use crate::{Bytes, ErrorKind};

const URL_VAR: &str = "DATANEXUS_TEST_REDIS_URL";

/// A private redis-server, killed on drop.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps the private server (if any) alive for the test.
struct Fixture {
    _server: Option<Server>,
    url: String,
    prefix: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
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
async fn spawn_server_with(extra: &[&str], url_auth: &str) -> Option<(Server, String)> {
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port().to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut server = Server { child, _dir: dir };
        let url = format!("redis://{url_auth}127.0.0.1:{port}/0");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if answers_ping(&url).await {
                return Some((server, url));
            }
            if matches!(server.child.try_wait(), Ok(Some(_))) {
                break; // lost the port to someone else: try another
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    None
}

async fn spawn_server() -> Option<(Server, String)> {
    spawn_server_with(&[], "").await
}

/// Fails under CI, else reports the skip.
fn skip(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no {what} to test against: set {URL_VAR} or put redis-server on PATH"
    );
    eprintln!("SKIPPED: no {what} to test against (set {URL_VAR} or put redis-server on PATH)");
}

/// The server to test against, or `None` to skip (never under CI).
async fn server() -> Option<(Option<Server>, String)> {
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

fn records(n: usize, partitions: u32) -> Vec<ProduceRecord> {
    (0..n)
        .map(|i| ProduceRecord {
            partition: Some(i as u32 % partitions),
            key: None,
            value: Bytes::from(format!("v{i}")),
            timestamp_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

fn values(ds: &[crate::Delivery]) -> BTreeSet<Bytes> {
    ds.iter().map(|d| d.value.clone()).collect()
}

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
async fn nacked_records_can_be_taken_by_another_consumer_at_once() {
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
    c1.nack(&got.iter().map(|d| d.id).collect::<Vec<_>>())
        .await
        .unwrap();
    let c2 = b.subscribe(&topic, &group, "c2", opts).await.unwrap();
    let taken = c2.poll(100, Duration::from_secs(1)).await.unwrap();
    assert_eq!(values(&taken), values(&got));
    // c1 does not get them back: c2 holds them now.
    assert!(
        c1.poll(100, Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
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
