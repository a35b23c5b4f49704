//! The fan-out over a real `redis-server` (started here on a free loopback port): two
//! gateways, one router; a client that moves between gateways gets its missed results
//! from the mailbox and its new ones live; a gateway resubscribes after Redis restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datanexus_fanout::{
    FanoutOptions, Mailbox, RedisMailbox, RedisRouter, ResultRouter, subscribe,
};
use datanexus_proto::datanexus::v1::ResultRecord;
use tokio::sync::{Mutex, Notify, watch};

struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts a private redis-server; `None` (skip) when the binary is missing and CI
    /// is not set.
    fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").is_err(),
                "redis-server is missing (.ci/run installs Debian's redis-server)"
            );
            eprintln!("skipped: redis-server not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = spawn(port, dir.path());
        wait_ready(port);
        Some(Redis { child, port, dir })
    }

    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.port, self.dir.path());
        wait_ready(self.port);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(port: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server")
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gateway's session registry stand-in: records what it is handed.
#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<ResultRecord>>,
    arrived: Notify,
}

#[async_trait]
impl ResultRouter for Recorder {
    async fn route(&self, results: &[ResultRecord]) {
        self.got.lock().await.extend_from_slice(results);
        self.arrived.notify_waiters();
    }
}

impl Recorder {
    async fn seqs_eventually(&self, want: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seqs: Vec<u64> = self
                .got
                .lock()
                .await
                .iter()
                .map(|r| r.event_offset + 1)
                .collect();
            if seqs.len() >= want || Instant::now() > deadline {
                return seqs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn result(client: &str, seq: u64) -> ResultRecord {
    ResultRecord {
        client_id: client.into(),
        event_offset: seq - 1,
        event_name: "sq".into(),
        number: i32::try_from(seq).unwrap(),
        processed_ns: datanexus_model_now(),
        ..ResultRecord::default()
    }
}

fn datanexus_model_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

struct Gateway {
    mailbox: RedisMailbox,
    recorder: Arc<Recorder>,
    resubscribed: Arc<Notify>,
}

async fn gateway(options: &FanoutOptions, id: &str, stop: &watch::Receiver<bool>) -> Gateway {
    let mailbox = RedisMailbox::connect(options, id).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let resubscribed = Arc::new(Notify::new());
    let notify = resubscribed.clone();
    tokio::spawn(subscribe(
        mailbox.client().clone(),
        mailbox.channel().to_owned(),
        recorder.clone(),
        move || {
            let notify = notify.clone();
            async move { notify.notify_one() }
        },
        stop.clone(),
    ));
    // Let the subscription settle (PUBLISH reaches only current subscribers).
    tokio::time::sleep(Duration::from_millis(300)).await;
    Gateway {
        mailbox,
        recorder,
        resubscribed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_moves_gateways_gets_missed_results_then_new_ones() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let mut config = datanexus_config::Config {
        redis: Some(datanexus_config::RedisConfig {
            url: redis.url(),
            prefix: format!("t{}", std::process::id()),
            ..datanexus_config::RedisConfig::default()
        }),
        ..datanexus_config::Config::default()
    };
    config.streams.max_replay_results = 1000;
    let options = FanoutOptions::from_config(&config).expect("[redis] is set");
    let (_stop_tx, stop) = watch::channel(false);
    let a = gateway(&options, "a", &stop).await;
    let b = gateway(&options, "b", &stop).await;
    let router = RedisRouter::connect(&options).await.unwrap();

    // Results of a client nobody claimed: mailbox only.
    router.route(&[result("c1", 1)]).await;
    a.mailbox.claim("c1").await.unwrap();
    let replay = a.mailbox.replay("c1", 0, 100, 0).await.unwrap();
    assert_eq!(replay.results.len(), 1);
    // Claimed by A: published to A only.
    router
        .route(&[result("c1", 2), result("c1", 3), result("c2", 1)])
        .await;
    assert_eq!(a.recorder.seqs_eventually(2).await, [2, 3]);

    // The client moves to B: B replays everything above its cursor, then gets new ones.
    b.mailbox.claim("c1").await.unwrap();
    let replay = b.mailbox.replay("c1", 1, 100, 0).await.unwrap();
    let seqs: Vec<u64> = replay.results.iter().map(|r| r.event_offset + 1).collect();
    assert_eq!(seqs, [2, 3]);
    router.route(&[result("c1", 4)]).await;
    assert_eq!(b.recorder.seqs_eventually(1).await, [4]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        a.recorder.seqs_eventually(2).await,
        [2, 3],
        "A got a result after the move"
    );

    // Bounded replay keeps the newest.
    let replay = b.mailbox.replay("c1", 0, 2, 0).await.unwrap();
    assert_eq!(replay.results.len(), 2);
    assert_eq!(replay.dropped, 2);

    // Redis restarts: the gateways resubscribe and say so; the mailbox survived (AOF).
    redis.restart();
    tokio::time::timeout(Duration::from_secs(20), b.resubscribed.notified())
        .await
        .expect("gateway b resubscribed");
    let replay = b.mailbox.replay("c1", 0, 100, 0).await.unwrap();
    assert_eq!(replay.results.len(), 4);
    router.route(&[result("c1", 5)]).await;
    assert_eq!(b.recorder.seqs_eventually(2).await, [4, 5]);
}
