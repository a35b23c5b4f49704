//! `datanexus export` and `datanexus export-consume` as a user runs them: a PostgreSQL
//! table exported to a Kafka topic (a private tansu) and to a CSV file, then the topic
//! read by `export-consume` calling an HTTP server of the test per record — three runs
//! in one group, stopped by `--limit`, by SIGTERM while calls run, and at the end, so
//! each run must start exactly where the one before committed; and 1,000,000 InfluxDB points through both
//! commands to the HTTP server.

#![cfg(all(feature = "kafka", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datanexus_broker::Broker;
use datanexus_broker::kafka::{KafkaBroker, KafkaOptions};
use datanexus_export::testkit::{InfluxServer, PASSWORD};
use datanexus_store_postgres::testkit::{TestDatabase, execute_blocking};
use support::Tansu;

const ROWS: u64 = 6_007;

fn datanexus(args: &[&str]) -> Output {
    datanexus_env(args, &[])
}

fn datanexus_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_datanexus"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("run datanexus");
    assert!(
        out.status.success(),
        "datanexus {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// The calls an HTTP server received: the id (the record's field `field`) of each
/// handled call, and the records of the ids in `sample`. The first call of every
/// record whose id is a multiple of 1,000 answers 500 (the client must retry it).
#[derive(Default)]
struct Calls {
    field: &'static str,
    /// How long each call takes.
    delay: Duration,
    ids: Vec<i64>,
    sample: BTreeMap<i64, serde_json::Value>,
    failed_once: BTreeMap<i64, ()>,
}

impl Calls {
    fn new(field: &'static str, sample: &[i64]) -> Arc<Mutex<Calls>> {
        Arc::new(Mutex::new(Calls {
            field,
            sample: sample
                .iter()
                .map(|&i| (i, serde_json::Value::Null))
                .collect(),
            ..Calls::default()
        }))
    }
}

fn serve_calls(calls: Arc<Mutex<Calls>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let calls = Arc::clone(&calls);
            std::thread::spawn(move || handle(stream, &calls));
        }
    });
    addr
}

/// Answers HTTP/1.1 requests on one keep-alive connection.
fn handle(stream: TcpStream, calls: &Mutex<Calls>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if first {
                assert!(line.starts_with("POST /record?key="), "{line}");
                first = false;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let record: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let delay = calls.lock().unwrap().delay;
        std::thread::sleep(delay);
        let status = {
            let mut calls = calls.lock().unwrap();
            let id = record[calls.field].as_i64().unwrap();
            if id % 1_000 == 0 && calls.failed_once.insert(id, ()).is_none() {
                "500 Internal Server Error"
            } else {
                calls.ids.push(id);
                if let Some(kept) = calls.sample.get_mut(&id) {
                    *kept = record;
                }
                "200 OK"
            }
        };
        let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_exported_to_kafka_is_consumed_once_per_row_across_runs_and_a_sigterm() {
    let Some(tansu) = Tansu::start() else {
        return;
    };
    let Some(db) = TestDatabase::create() else {
        return;
    };
    execute_blocking(
        db.url(),
        "CREATE TABLE readings (id int8, taken timestamptz NOT NULL, site text, v float8)",
    )
    .unwrap();
    execute_blocking(
        db.url(),
        &format!(
            "INSERT INTO readings SELECT i, timestamptz '2026-03-01 00:00:00+00' + \
             i * interval '1 second', 's' || (i % 7), i * 0.5 \
             FROM generate_series(0, {}) AS i",
            ROWS - 1
        ),
    )
    .unwrap();
    let bootstrap = format!("127.0.0.1:{}", tansu.port);
    let topic = "readings-out";
    KafkaBroker::open(KafkaOptions {
        bootstrap_servers: bootstrap.clone(),
        ..KafkaOptions::default()
    })
    .unwrap()
    .ensure_topic(topic, 3)
    .await
    .unwrap();

    // To Kafka: the final table names the rows and the three partitions.
    let to = format!("kafka://{bootstrap}/{topic}");
    let out = datanexus(&[
        "export",
        "--connection",
        db.url(),
        "--table",
        "readings",
        "--to",
        &to,
        "--divided-jobs",
        "6",
        "--workers",
        "3",
    ]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains(&format!("rows       {ROWS}\n")), "{table}");
    assert!(table.contains("state      succeeded"), "{table}");
    assert_eq!(table.matches("partition  ").count(), 3, "{table}");

    // To a file, over a range: both ends included.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("part.csv");
    datanexus(&[
        "export",
        "--connection",
        db.url(),
        "--table",
        "readings",
        "--start",
        "2026-03-01T00:00:10Z",
        "--end",
        "2026-03-01T00:00:19Z",
        "--to",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 11, "{text}");
    assert_eq!(lines[0], "taken,id,site,v");
    assert_eq!(lines[1], "2026-03-01T00:00:10Z,10,s3,5");
    // Nothing but the file is left next to it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // Bad input is refused before anything runs.
    let bad = Command::new(env!("CARGO_BIN_EXE_datanexus"))
        .args(["export", "--connection", db.url(), "--table", "readings"])
        .args(["--to", &format!("kafka://{bootstrap}/no-such-topic")])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // export-consume, three runs in one group: the first stops at --limit, the second
    // at SIGTERM while calls are running (each call takes 2 ms), the third handles the
    // rest. Each must start exactly after what the one before committed.
    let calls = Calls::new("id", &[4_321]);
    calls.lock().unwrap().delay = Duration::from_millis(2);
    let addr = serve_calls(Arc::clone(&calls));
    let url = format!("http://{addr}/record?key={{key}}&offset={{offset}}");
    let consume = |extra: &[&str]| {
        let mut args = vec![
            "export-consume",
            "--bootstrap-servers",
            &bootstrap,
            "--group",
            "deliver",
            "--topic",
            topic,
            "--workers",
            "8",
            "--http-url-fmt",
            &url,
            "--idle-timeout",
            "20s",
        ];
        args.extend_from_slice(extra);
        args.iter()
            .map(|a| (*a).to_owned())
            .collect::<Vec<String>>()
    };
    datanexus(
        &consume(&["--limit", "2000"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(calls.lock().unwrap().ids.len(), 2_000);
    let mut second = Command::new(env!("CARGO_BIN_EXE_datanexus"))
        .args(consume(&[]))
        .env_remove("RUST_LOG")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while calls.lock().unwrap().ids.len() < 3_500 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second run handles nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let term = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(
        second.wait().unwrap().success(),
        "a stop by SIGTERM exits 0"
    );
    let after_second = calls.lock().unwrap().ids.len();
    assert!(
        after_second < usize::try_from(ROWS).unwrap(),
        "SIGTERM came after every record was handled: {after_second}"
    );
    let rest = (usize::try_from(ROWS).unwrap() - after_second).to_string();
    datanexus(
        &consume(&["--limit", &rest])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let calls = calls.lock().unwrap();
    let mut ids = calls.ids.clone();
    ids.sort_unstable();
    let handled = usize::try_from(ROWS).unwrap();
    assert_eq!(ids.len(), handled, "every call handled once");
    ids.dedup();
    assert_eq!(ids.len(), handled, "no record handled twice");
    assert_eq!(
        calls.failed_once.len(),
        ids.iter().filter(|i| *i % 1_000 == 0).count()
    );
    let sample = &calls.sample[&4_321];
    assert_eq!(sample["site"], "s2");
    assert_eq!(sample["v"], 2_160.5);
    assert_eq!(sample["taken"], "2026-03-01T01:12:01Z");
}

/// 1,000,000 InfluxDB points → `datanexus export` (a URL connection, the password from
/// the environment) → Kafka → `datanexus export-consume` calling the test's HTTP server:
/// one handled call per point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_influx_points_reach_an_http_service_through_both_commands() {
    let Some(tansu) = Tansu::start() else {
        return;
    };
    let Some(influx) = InfluxServer::start() else {
        return;
    };
    influx.admin_query("CREATE DATABASE telegraf").unwrap();
    const POINTS: i64 = 1_000_000;
    let mut lines = String::new();
    for i in 0..POINTS {
        lines.push_str(&format!(
            "cpu,host=h{} usage={i}.25,n={i}i {}\n",
            i % 100,
            (1_600_000_000 + i / 100) * 1_000_000_000
        ));
        if (i + 1) % 50_000 == 0 {
            influx.write("telegraf", &lines).unwrap();
            lines.clear();
        }
    }
    let bootstrap = format!("127.0.0.1:{}", tansu.port);
    KafkaBroker::open(KafkaOptions {
        bootstrap_servers: bootstrap.clone(),
        ..KafkaOptions::default()
    })
    .unwrap()
    .ensure_topic("points", 4)
    .await
    .unwrap();
    let url = format!("http://{}", influx.addr);
    let to = format!("kafka://{bootstrap}/points");
    let out = datanexus_env(
        &[
            "export",
            "--connection",
            &url,
            "--username",
            "dn-admin",
            "--database",
            "telegraf",
            "--table",
            "cpu",
            "--to",
            &to,
        ],
        &[("DATANEXUS_EXPORT_PASSWORD", PASSWORD)],
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains(&format!("rows       {POINTS}\n")), "{table}");

    let calls = Calls::new("n", &[123_457]);
    let addr = serve_calls(Arc::clone(&calls));
    let callback = format!("http://{addr}/record?key={{key}}");
    datanexus(&[
        "export-consume",
        "--bootstrap-servers",
        &bootstrap,
        "--group",
        "million",
        "--topic",
        "points",
        "--workers",
        "16",
        "--http-url-fmt",
        &callback,
        "--limit",
        &POINTS.to_string(),
    ]);
    let calls = calls.lock().unwrap();
    assert_eq!(calls.ids.len(), usize::try_from(POINTS).unwrap());
    let mut ids = calls.ids.clone();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        usize::try_from(POINTS).unwrap(),
        "no point handled twice"
    );
    assert_eq!(ids.last(), Some(&(POINTS - 1)));
    assert_eq!(
        calls.sample[&123_457],
        serde_json::json!({"time": "2020-09-13T12:47:14Z", "host": "h57", "n": 123_457,
                           "usage": 123_457.25})
    );
}
