//! `datanexus consume`: prints the records of a topic in the embedded log as JSON lines,
//! decoding the documented formats (`metrics` → PointRecord, `events` → EventRecord).
//! It opens the log itself, so the server using that data directory must be stopped.

use std::io::Write;

use anyhow::Context;
use datanexus_model::{FieldValue, codec};
use datanexus_seglog::{Log, LogOptions, StoredRecord};
use serde_json::{Map, Value, json};

use crate::cli::ConsumeArgs;

/// Records read per call.
const CHUNK: usize = 4096;

pub(crate) async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.join("log");
    let log = Log::open(&dir, LogOptions::default())
        .with_context(|| format!("cannot open the log in {}", dir.display()))?;
    let partitions = log.partitions(&args.topic)?;
    let selected: Vec<u32> = match args.partition {
        Some(p) if p < partitions => vec![p],
        Some(p) => anyhow::bail!(
            "partition {p} out of range: topic {:?} has {partitions}",
            args.topic
        ),
        None => (0..partitions).collect(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for p in selected {
        let mut next = args.from_offset.max(log.start_offset(&args.topic, p)?);
        let mut printed = 0u64;
        while printed < args.limit {
            let want = CHUNK.min(usize::try_from(args.limit - printed).unwrap_or(CHUNK));
            let batch = log.read(&args.topic, p, next, want)?;
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            for rec in &batch {
                writeln!(out, "{}", render(&args.topic, p, rec))?;
                printed += 1;
            }
        }
    }
    out.flush()?;
    log.close()?;
    Ok(())
}

fn render(topic: &str, partition: u32, rec: &StoredRecord) -> Value {
    let value = match topic {
        "metrics" => codec::decode_point(&rec.value).map(|p| {
            let fields: Map<String, Value> = p.fields.iter().map(|(k, v)| (k.clone(), field_json(v))).collect();
            let labels: Map<String, Value> = p.labels.iter().map(|(k, v)| (k.to_owned(), json!(v))).collect();
            json!({"measurement": p.measurement, "labels": labels, "fields": fields,
                   "timestamp_ns": p.timestamp_ns, "type": p.kind.as_str(), "help": p.help})
        }),
        "events" => codec::decode_event(&rec.value)
            .map(|e| json!({"source_id": e.source_id, "timestamp_ns": e.timestamp_ns, "payload": e.payload})),
        _ => Ok(json!(String::from_utf8_lossy(&rec.value))),
    };
    let value = value.unwrap_or_else(|e| json!({"undecodable": e.to_string()}));
    json!({"partition": partition, "offset": rec.offset, "timestamp_ms": rec.timestamp_ms, "value": value})
}

fn field_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        FieldValue::I64(i) => json!(i),
        FieldValue::U64(u) => json!(u),
        FieldValue::Bool(b) => json!(b),
        FieldValue::Str(s) => json!(s),
    }
}
