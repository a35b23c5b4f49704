//! Tests against a real Kafka-protocol broker: the conformance suite, then
//! Kafka-specific checks.
//!
//! The broker is the one at `TEST_KAFKA_BROKERS` (`host:port`) when set (`.ci/run`
//! starts a tansu), else a private tansu (an Apache-2.0 Kafka-compatible broker with
//! in-memory storage; an external binary, found at `TANSU_BIN` or
//! `~/.cache/datanexus-tools/tansu`) on a free port, killed when the test ends. Without
//! either, a test fails under `CI=true` and is skipped otherwise. Every test uses its
//! own topics and groups, so tests can share a broker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::conformance::{records, unique};
use crate::testkit::{self, ServerProcess, free_port};
use crate::{Bytes, ErrorKind, Position};

/// Keeps the private broker (if any) alive for the test.
struct Fixture {
    _server: Option<ServerProcess>,
    bootstrap: String,
}

/// Fails under CI, else reports the skip.
fn skip(what: &str) {
    testkit::skip(what, testkit::KAFKA_HINT);
}

/// The broker to test against, or `None` to skip (never under CI).
async fn server() -> Option<(Option<ServerProcess>, String)> {
    testkit::kafka_server().await
}

fn test_options(bootstrap: &str) -> KafkaOptions {
    KafkaOptions {
        bootstrap_servers: bootstrap.to_owned(),
        client_id: unique("dn-test"),
        ..KafkaOptions::default()
    }
}

async fn open_broker() -> Option<(Fixture, KafkaBroker)> {
    let (server, bootstrap) = server().await?;
    let broker = KafkaBroker::open(test_options(&bootstrap)).expect("open");
    let fixture = Fixture {
        _server: server,
        bootstrap,
    };
    Some((fixture, broker))
}

async fn open() -> Option<(Fixture, Arc<dyn Broker>)> {
    let (fixture, broker) = open_broker().await?;
    Some((fixture, Arc::new(broker)))
}

/// Kafka's group protocol is slow (tansu's join takes about half the session
/// timeout), and a member that does not poll for the session timeout leaves.
fn options() -> ConsumerOptions {
    ConsumerOptions {
        lease_timeout: Duration::from_secs(30),
        session_timeout: Duration::from_secs(4),
    }
}

crate::conformance::conformance_suite!(open, options());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_a_partition_are_placed_by_the_jump_hash_of_their_key() {
    let Some((_f, b)) = open_broker().await else {
        return;
    };
    let topic = unique("placed");
    b.ensure_topic(&topic, 5).await.unwrap();
    let keyed: Vec<ProduceRecord> = (0..40)
        .map(|i| ProduceRecord {
            partition: None,
            key: Some(Bytes::from(format!("series-{i}"))),
            value: Bytes::from(format!("v{i}")),
            timestamp_ms: 1_700_000_000_000,
        })
        .collect();
    let ids = b.produce(&topic, keyed.clone()).await.unwrap();
    for (record, id) in keyed.iter().zip(&ids) {
        let key = record.key.as_ref().unwrap();
        assert_eq!(
            id.partition,
            datanexus_model::series::partition_of_bytes(key, 5),
            "{key:?}"
        );
    }
    let keyless = (0..10)
        .map(|i| ProduceRecord {
            partition: None,
            key: None,
            value: Bytes::from(format!("k{i}")),
            timestamp_ms: 0,
        })
        .collect();
    let ids = b.produce(&topic, keyless).await.unwrap();
    let used: std::collections::BTreeSet<_> = ids.iter().map(|id| id.partition).collect();
    assert_eq!(used.len(), 5, "round-robin over every partition: {ids:?}");
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
    let other = KafkaBroker::open(test_options(&f.bootstrap)).unwrap();
    let err = other.ensure_topic(&topic, 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(other.partitions(&topic).await.unwrap(), 3);
    for bad in ["bad:name", "", ".."] {
        let err = b.ensure_topic(bad, 1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
    }
    let err = b.ensure_topic(&unique("zero"), 0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = b.partitions(&unique("missing")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// Waits until `c` is assigned its partitions and gets `want` records, acking them.
async fn drain_acking(c: &dyn Consumer, want: usize) -> Vec<crate::Delivery> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let batch = c.poll(100, Duration::from_millis(500)).await.unwrap();
        c.ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>())
            .await
            .unwrap();
        got.extend(batch);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_poll_neither_delays_produce_nor_misses_new_records() {
    let Some((_f, b)) = open_broker().await else {
        return;
    };
    let topic = unique("block");
    b.ensure_topic(&topic, 4).await.unwrap();
    b.produce(&topic, records(1, 4)).await.unwrap();
    let c: Arc<dyn Consumer> = Arc::from(
        b.subscribe(&topic, &unique("g"), "c1", options())
            .await
            .unwrap(),
    );
    assert_eq!(drain_acking(c.as_ref(), 1).await.len(), 1, "never joined");
    let poller = {
        let c = c.clone();
        tokio::spawn(async move {
            let got = c.poll(10, Duration::from_secs(10)).await.unwrap();
            (got, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    b.produce(&topic, records(1, 4)).await.unwrap();
    let produced = Instant::now();
    assert!(
        produced - start < Duration::from_secs(1),
        "produce waited {:?}",
        produced - start
    );
    let (got, returned) = poller.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        returned.saturating_duration_since(produced) < Duration::from_secs(2),
        "poll returned {:?} after the record was produced",
        returned.saturating_duration_since(produced)
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_broker_and_its_consumers_answer_closed() {
    let Some((_f, b)) = open_broker().await else {
        return;
    };
    let topic = unique("stop");
    b.ensure_topic(&topic, 1).await.unwrap();
    b.produce(&topic, records(3, 1)).await.unwrap();
    let c = b
        .subscribe(&topic, &unique("g"), "c", options())
        .await
        .unwrap();
    b.stop().await.unwrap();
    b.stop().await.unwrap();
    for err in [
        b.produce(&topic, records(1, 1)).await.unwrap_err(),
        b.ready().await.unwrap_err(),
        b.ensure_topic(&topic, 1).await.unwrap_err(),
        c.poll(1, Duration::ZERO).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_broker_that_is_down_fail_fast_as_unavailable() {
    let b = KafkaBroker::open(KafkaOptions {
        request_timeout: Duration::from_secs(1),
        ..test_options(&format!("127.0.0.1:{}", free_port()))
    })
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
        start.elapsed() < Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn unknown_properties_are_rejected_at_open() {
    let mut options = KafkaOptions::default();
    options
        .properties
        .insert("no.such.property".into(), "1".into());
    let err = KafkaBroker::open(options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("no.such.property"), "{err}");
}

/// Reads one record with Python's confluent-kafka (an independent client over its own
/// librdkafka) and prints `partition offset key-hex value-hex timestamp`.
const PYTHON_READER: &str = r#"
import sys
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, partition, offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "interop", "enable.auto.commit": False})
c.assign([TopicPartition(topic, partition, offset)])
m = None
for _ in range(60):
    m = c.poll(1.0)
    if m is not None and m.error() is None:
        break
if m is None or m.error() is not None:
    sys.exit("no record: %r" % (m and m.error(),))
print(m.partition(), m.offset(), (m.key() or b"").hex(), m.value().hex(), m.timestamp()[1])
c.close()
"#;

fn python_with_confluent_kafka() -> bool {
    Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_kafka_client_reads_the_records_we_produce() {
    if !python_with_confluent_kafka() {
        return skip("python3 with confluent-kafka");
    }
    let Some((f, b)) = open_broker().await else {
        return;
    };
    let topic = unique("interop");
    b.ensure_topic(&topic, 3).await.unwrap();
    let key = Bytes::from_static(b"host-a\x00\xff");
    let value = Bytes::from_static(b"\x01payload\xfe\x00");
    let record = ProduceRecord {
        partition: None,
        key: Some(key.clone()),
        value: value.clone(),
        timestamp_ms: 1_700_000_000_123,
    };
    let id = b.produce(&topic, vec![record]).await.unwrap()[0];
    let Position::Offset(offset) = id.position else {
        panic!("offset id expected: {id}");
    };
    let args = [
        f.bootstrap.clone(),
        topic,
        id.partition.to_string(),
        offset.to_string(),
    ];
    let output = admin::blocking(move || {
        Command::new("python3")
            .args(["-c", PYTHON_READER])
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!(
            "{} {offset} {} {} 1700000000123",
            id.partition,
            hex(&key),
            hex(&value)
        )
    );
}

/// TLS to Kafka with a private CA made by the test. tansu speaks plain text, so the test
/// puts a TLS terminator (rustls) in front of a private tansu and makes tansu advertise
/// the terminator's address: every connection of the client — bootstrap and broker —
/// goes through TLS. With `security.protocol = ssl` and `ssl.ca.location` = the CA the
/// backend creates a topic, produces and consumes through it; trusting only the
/// system's CAs it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let pki = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (librdkafka) takes a leaf named like its issuer for a
    // self-signed certificate.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "datanexus test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "datanexus test broker");
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let ca_file = pki.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    // The terminator's port first: tansu must advertise it.
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls.local_addr().unwrap();
    let Some((_tansu, plain)) = testkit::tansu_behind(&format!("tcp://{tls_addr}")).await else {
        return skip("tansu (for TLS)");
    };
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let terminator = {
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = tls.accept().await else {
                    return;
                };
                let (acceptor, plain, handshakes) =
                    (acceptor.clone(), plain.clone(), handshakes.clone());
                tokio::spawn(async move {
                    let mut secure = match acceptor.accept(tcp).await {
                        Ok(secure) => secure,
                        Err(e) => {
                            eprintln!("TLS terminator: handshake failed: {e}");
                            return;
                        }
                    };
                    handshakes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&plain).await {
                        let _ = tokio::io::copy_bidirectional(&mut secure, &mut upstream).await;
                    }
                });
            }
        })
    };

    let tls_options = |ca: Option<&std::path::Path>| {
        let mut o = test_options(&tls_addr.to_string());
        o.request_timeout = Duration::from_secs(5);
        o.delivery_timeout = Duration::from_secs(5);
        o.properties
            .insert("security.protocol".to_owned(), "ssl".to_owned());
        if let Some(ca) = ca {
            o.properties
                .insert("ssl.ca.location".to_owned(), ca.display().to_string());
        }
        o
    };
    let b = KafkaBroker::open(tls_options(Some(&ca_file))).unwrap();
    let topic = unique("tls");
    b.ensure_topic(&topic, 2).await.unwrap();
    b.produce(&topic, records(3, 1)).await.unwrap();
    let c = b
        .subscribe(&topic, &unique("g"), "c1", options())
        .await
        .unwrap();
    assert_eq!(drain_acking(c.as_ref(), 3).await.len(), 3);
    assert!(
        handshakes.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "nothing went through the TLS terminator"
    );

    // Trusting only the system's CAs, the private certificate is refused.
    let untrusting = KafkaBroker::open(tls_options(None)).unwrap();
    let err = untrusting.produce(&topic, records(1, 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    terminator.abort();
}
