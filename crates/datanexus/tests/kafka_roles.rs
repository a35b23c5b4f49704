//! Data Nexus on Kafka (a private tansu broker) with Redis for the result fan-out:
//! gateways, processors and a store as separate processes; and an independent Kafka
//! client (confluent-kafka) decoding what Data Nexus wrote to the `metrics` topic.

#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "common/roles.rs"]
mod roles_support;
mod support;

use std::process::Command;

use roles_support::Deployment;
use support::{Redis, Server, Tansu};

/// Kafka group protocol timings for tansu (its join takes about half the session
/// timeout); a killed processor's partitions move after the session timeout.
const WORKER_ENV: &[(&str, &str)] = &[
    ("DATANEXUS_WORKERS__LEASE_TIMEOUT", "20s"),
    ("DATANEXUS_WORKERS__SESSION_TIMEOUT", "6s"),
];

fn deploy(tansu: &Tansu, redis: &Redis, processors: usize, gateways: usize) -> Deployment {
    let (kafka, redis) = (tansu.url(), redis.url());
    Deployment::start(
        &["--broker", &kafka, "--redis", &redis],
        WORKER_ENV,
        processors,
        gateways,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_two_processors_one_store_on_kafka_serve_every_client_and_metric() {
    let (Some(tansu), Some(redis)) = (Tansu::start(), Redis::start()) else {
        return;
    };
    roles_support::clients_and_metrics(deploy(&tansu, &redis, 2, 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_on_kafka_with_a_postgres_store_serve_every_client_and_metric() {
    let (Some(tansu), Some(redis)) = (Tansu::start(), Redis::start()) else {
        return;
    };
    let Some(db) = datanexus_store_postgres::testkit::TestDatabase::create() else {
        return;
    };
    let (kafka, redis) = (tansu.url(), redis.url());
    let d = Deployment::start(
        &["--broker", &kafka, "--redis", &redis, "--store", db.url()],
        WORKER_ENV,
        1,
        2,
    );
    roles_support::clients_and_metrics(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processor_on_kafka_loses_and_repeats_nothing_at_the_clients() {
    let (Some(tansu), Some(redis)) = (Tansu::start(), Redis::start()) else {
        return;
    };
    roles_support::killed_processor(deploy(&tansu, &redis, 2, 1)).await;
}

/// Reads the first record of topic `metrics` with confluent-kafka and decodes it as a
/// `datanexus.v1.PointRecord` (module generated from `records.proto` by grpcio-tools);
/// prints `measurement|label=value,…|field=value|timestamp_ns|key hex`.
const READER: &str = r#"
import sys, tempfile, importlib
from grpc_tools import protoc
from confluent_kafka import Consumer
bootstrap, proto_dir = sys.argv[1], sys.argv[2]
out = tempfile.mkdtemp()
assert protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", "datanexus/v1/records.proto"]) == 0
sys.path.insert(0, out)
records = importlib.import_module("datanexus.v1.records_pb2")
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "independent-reader",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe(["metrics"])
for _ in range(120):
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    p = records.PointRecord.FromString(m.value())
    labels = ",".join(f"{l.name}={l.value}" for l in p.labels)
    fields = ",".join(f"{f.name}={f.f64}" for f in p.fields)
    print(f"{p.measurement}|{labels}|{fields}|{p.timestamp_ns}|{m.key().hex()}")
    break
else:
    sys.exit("no record within 120 s")
c.close()
"#;

#[test]
fn an_independent_kafka_client_decodes_the_metrics_topic_with_the_documented_format() {
    let Some(tansu) = Tansu::start() else {
        return;
    };
    if !support::tool_available("python3", "Debian's python3") {
        return;
    }
    let importable = Command::new("python3")
        .args(["-c", "import confluent_kafka, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        assert!(
            std::env::var("CI").is_err(),
            "CI is set but confluent-kafka or grpcio-tools is missing (.ci/run installs them)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--broker", &tansu.url()]);
    let (status, body) = support::http_post_json(
        server.http,
        "/metrics",
        r#"{"metric_name":"kafka_decoded","value":42.5,"labels":{"host":"a","dc":"eu"},"timestamp":1700000000}"#,
    );
    assert_eq!(status, 200, "{body}");
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto");
    let out = Command::new("python3")
        .args([
            "-c",
            READER,
            &format!("127.0.0.1:{}", tansu.port),
            proto_dir,
        ])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reader failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Vec<&str> = stdout.trim().split('|').collect();
    assert_eq!(
        &fields[..4],
        [
            "kafka_decoded",
            "dc=eu,host=a",
            "value=42.5",
            "1700000000000000000"
        ],
        "{stdout}"
    );
    assert_eq!(fields[4].len(), 16, "an 8-byte point key: {stdout}");
    assert!(server.terminate());
}
