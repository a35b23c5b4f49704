//! The yardstick of `scripts/bench/export.sh`: a plain librdkafka producer (rdkafka's
//! `FutureProducer`, the export's settings: idempotent, `acks=all`, lz4) sending the
//! lines of an NDJSON file as records — the same values an export sends with
//! `format=json` — keyed by one field, to partitions round-robin by chunk of lines.
//! Prints `{"records", "seconds", "records_per_second"}`.
//!
//! `cargo run --release -p datanexus-export --features kafka --example plain_producer --
//! BROKERS TOPIC FILE KEY_FIELD PARTITIONS`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic, file, key_field, partitions] = args.as_slice() else {
        eprintln!("usage: plain_producer BROKERS TOPIC FILE KEY_FIELD PARTITIONS");
        std::process::exit(2);
    };
    let partitions: i32 = partitions.parse().expect("partitions");
    // Read and split before the clock starts: only producing is timed.
    let text = std::fs::read_to_string(file).expect("read the file");
    let records: Vec<(String, &str)> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            (
                v[key_field.as_str()]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                line,
            )
        })
        .collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let chunk = records
        .len()
        .div_ceil(usize::try_from(partitions).unwrap() * 8)
        .max(1);
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let partition = i32::try_from(i / chunk).unwrap() % partitions;
        loop {
            let record = FutureRecord::to(topic)
                .partition(partition)
                .key(key.as_str())
                .payload(*value);
            match producer.send_result(record) {
                Ok(delivery) => {
                    inflight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Make room: wait for some deliveries.
                    for _ in 0..1_000 {
                        if inflight.next().await.is_none() {
                            break;
                        }
                    }
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    while let Some(delivery) = inflight.next().await {
        delivery.expect("delivered").expect("no error");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"records": records.len(), "seconds": seconds,
                           "records_per_second": records.len() as f64 / seconds})
    );
}
