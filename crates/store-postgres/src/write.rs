//! Writes: points by binary `COPY` into a per-connection staging table, then one
//! `INSERT … ON CONFLICT (series_id, ts) DO UPDATE` (a redelivered batch rewrites the
//! same rows: idempotent, and a rewrite replaces the value as in the embedded store);
//! events by one `INSERT … ON CONFLICT (id) DO UPDATE`.
//!
//! Visibility and durability: each write commits with `synchronous_commit = off`, so it
//! is visible to queries at once; [`flush`] then commits a write with
//! `synchronous_commit = on`, whose WAL flush covers every earlier commit (WAL is
//! flushed in order). The sinker acknowledges broker records only after that flush, so a
//! PostgreSQL crash loses nothing that was acknowledged.
//!
//! PostgreSQL text and `jsonb` cannot hold NUL characters: they are stored as U+FFFD.

use std::borrow::Cow;
use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use datanexus_model::{MetricType, Point, series_id};
use futures::SinkExt;
use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;

use super::schema::day_of;
use super::{Inner, Meta, pg_error};
use datanexus_store::{Outcome, Result, StoredEvent, StoredResult};

/// One sample row.
#[derive(Debug, Clone, Copy)]
struct Row {
    series_id: i64,
    ts: i64,
    value: f64,
}

/// A series first seen in this batch.
struct NewSeries {
    id: u64,
    measurement: String,
    field: String,
    labels: String,
}

/// What a batch of points writes.
#[derive(Default)]
struct Batch {
    rows: Vec<Row>,
    series: Vec<NewSeries>,
    meta: Vec<(String, Meta)>,
}

/// Splits points into sample rows (deduplicated, the last write of a (series, ts)
/// winning), series not yet known, and changed measurement metadata.
fn prepare(inner: &Inner, points: &[Point]) -> Batch {
    let mut batch = Batch::default();
    let mut meta: std::collections::HashMap<&str, Meta> = std::collections::HashMap::new();
    let known = inner.series.lock();
    let cached_meta = inner.meta.lock();
    let mut new_ids = std::collections::HashSet::new();
    for p in points {
        let current = meta
            .get(p.measurement.as_str())
            .or_else(|| cached_meta.get(&p.measurement));
        let help = p
            .help
            .clone()
            .or_else(|| current.and_then(|m| m.help.clone()));
        meta.insert(&p.measurement, Meta { kind: p.kind, help });
        for (field, v) in &p.fields {
            let Some(value) = v.as_f64() else { continue };
            let id = series_id(&p.measurement, field, &p.labels);
            if !known.contains(&id) && new_ids.insert(id) {
                batch.series.push(NewSeries {
                    id,
                    measurement: p.measurement.clone(),
                    field: field.clone(),
                    labels: labels_json(p.labels.iter()),
                });
            }
            batch.rows.push(Row {
                series_id: id as i64,
                ts: p.timestamp_ns,
                value,
            });
        }
    }
    batch.meta = meta
        .into_iter()
        .filter(|(name, m)| cached_meta.get(*name) != Some(m))
        .map(|(name, m)| (name.to_owned(), m))
        .collect();
    // Stable: equal keys keep their write order, and the later one wins.
    batch.rows.sort_by_key(|r| (r.series_id, r.ts));
    batch.rows.dedup_by(|later, kept| {
        let same = later.series_id == kept.series_id && later.ts == kept.ts;
        if same {
            kept.value = later.value;
        }
        same
    });
    batch
}

/// Labels as a JSON object (NULs replaced).
fn labels_json<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let map: Map<String, Value> = labels
        .map(|(k, v)| {
            (
                pg_text(k).into_owned(),
                Value::String(pg_text(v).into_owned()),
            )
        })
        .collect();
    Value::Object(map).to_string()
}

/// `s` without NUL characters (PostgreSQL text cannot hold them).
pub(crate) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A JSON value without NUL characters in its strings and keys.
fn pg_json(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(pg_text(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(pg_json).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (pg_text(k).into_owned(), pg_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The rows in PostgreSQL's binary `COPY` format: (series_id int8, ts int8, value float8).
fn copy_data(rows: &[Row]) -> Bytes {
    let mut buf = BytesMut::with_capacity(19 + rows.len() * 38 + 2);
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0); // flags
    buf.put_i32(0); // header extension length
    for r in rows {
        buf.put_i16(3);
        buf.put_i32(8);
        buf.put_i64(r.series_id);
        buf.put_i32(8);
        buf.put_i64(r.ts);
        buf.put_i32(8);
        buf.put_f64(r.value);
    }
    buf.put_i16(-1);
    buf.freeze()
}

/// Rows per sample shard below which a batch is not split.
const MIN_SHARD_ROWS: usize = 2_500;
/// Most sample shards written at once (each on its own connection).
const MAX_SHARDS: usize = 4;

/// Writes points; see the module docs. New series and changed metadata are committed
/// first, then the samples, split by series over up to [`MAX_SHARDS`] connections
/// written concurrently (their keys are disjoint, so they never wait on each other).
/// If any part fails the whole call fails, and the retry rewrites what did commit
/// (idempotent).
pub(super) async fn write_points(inner: &Inner, points: &[Point]) -> Result<()> {
    let batch = prepare(inner, points);
    if batch.rows.is_empty() && batch.meta.is_empty() {
        return Ok(());
    }
    let target = inner.target.as_str();
    {
        let mut client = inner.client().await?;
        let days: BTreeSet<i64> = batch.rows.iter().map(|r| day_of(r.ts)).collect();
        let (today, ahead) = inner.partition_window();
        inner
            .partitions
            .ensure(&mut client, target, days, today, ahead)
            .await?;
        write_catalog(inner, &mut client, &batch).await?;
    }
    let shards = (batch.rows.len() / MIN_SHARD_ROWS)
        .clamp(1, MAX_SHARDS)
        .min(inner.options.pool_size.max(1));
    if shards == 1 {
        write_samples(inner, &batch.rows).await?;
    } else {
        let mut parts: Vec<Vec<Row>> = (0..shards).map(|_| Vec::new()).collect();
        for r in &batch.rows {
            let shard = (r.series_id as u64 % shards as u64) as usize;
            if let Some(part) = parts.get_mut(shard) {
                part.push(*r);
            }
        }
        futures::future::try_join_all(parts.iter().map(|p| write_samples(inner, p))).await?;
    }
    inner
        .series
        .lock()
        .extend(batch.series.iter().map(|s| s.id));
    inner.meta.lock().extend(batch.meta);
    inner.note_written(batch.rows.len());
    Ok(())
}

/// Commits the batch's new series and changed measurement metadata.
async fn write_catalog(
    inner: &Inner,
    client: &mut deadpool_postgres::Object,
    batch: &Batch,
) -> Result<()> {
    if batch.series.is_empty() && batch.meta.is_empty() {
        return Ok(());
    }
    let pg = |e| pg_error(&inner.target, e);
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(pg)?;
    if !batch.series.is_empty() {
        let ids: Vec<i64> = batch.series.iter().map(|s| s.id as i64).collect();
        let names: Vec<Cow<'_, str>> = batch
            .series
            .iter()
            .map(|s| pg_text(&s.measurement))
            .collect();
        let fields: Vec<Cow<'_, str>> = batch.series.iter().map(|s| pg_text(&s.field)).collect();
        let labels: Vec<&str> = batch.series.iter().map(|s| s.labels.as_str()).collect();
        tx.execute(
            "INSERT INTO dn_series (series_id, measurement, field, labels) \
             SELECT i, m, f, l::jsonb FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS t(i, m, f, l) \
             ON CONFLICT (series_id) DO NOTHING",
            &[&ids, &names, &fields, &labels],
        )
        .await
        .map_err(pg)?;
    }
    if !batch.meta.is_empty() {
        let names: Vec<Cow<'_, str>> = batch.meta.iter().map(|(n, _)| pg_text(n)).collect();
        let kinds: Vec<&str> = batch.meta.iter().map(|(_, m)| m.kind.as_str()).collect();
        let helps: Vec<Option<String>> = batch
            .meta
            .iter()
            .map(|(_, m)| m.help.as_deref().map(|h| pg_text(h).into_owned()))
            .collect();
        tx.execute(
            "INSERT INTO dn_measurements (measurement, kind, help) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (measurement) DO UPDATE \
             SET kind = EXCLUDED.kind, help = coalesce(EXCLUDED.help, dn_measurements.help)",
            &[&names, &kinds, &helps],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)
}

/// Commits sample rows. First a binary `COPY` straight into `dn_samples` (inside a
/// savepoint): new samples, the usual case, take the cheapest path. If any row already
/// exists (a redelivery, or a rewrite) the `COPY` fails with a unique violation, the
/// savepoint is rolled back, and the rows go through the staging table and one
/// `INSERT … ON CONFLICT (series_id, ts) DO UPDATE` instead.
async fn write_samples(inner: &Inner, rows: &[Row]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let pg = |e| pg_error(&inner.target, e);
    let mut client = inner.client().await?;
    let mut tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(pg)?;
    let data = copy_data(rows);
    let direct = {
        let savepoint = tx.savepoint("dn_direct").await.map_err(pg)?;
        match copy_into(&savepoint, "dn_samples", data.clone()).await {
            Ok(()) => savepoint.commit().await.map(|()| true),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                savepoint.rollback().await.map(|()| false)
            }
            Err(e) => Err(e),
        }
    }
    .map_err(|e| missing_partition(inner, e))?;
    if !direct {
        tx.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS dn_staging (
                 series_id bigint, ts bigint, value double precision
             ) ON COMMIT DELETE ROWS",
        )
        .await
        .map_err(pg)?;
        copy_into(&tx, "dn_staging", data).await.map_err(pg)?;
        tx.execute(
            "INSERT INTO dn_samples (series_id, ts, value) \
             SELECT series_id, ts, value FROM dn_staging \
             ON CONFLICT (series_id, ts) DO UPDATE SET value = EXCLUDED.value",
            &[],
        )
        .await
        .map_err(|e| missing_partition(inner, e))?;
    }
    tx.commit().await.map_err(pg)
}

/// `COPY table (series_id, ts, value) FROM STDIN (FORMAT binary)` of `data`.
async fn copy_into(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    data: Bytes,
) -> std::result::Result<(), tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} (series_id, ts, value) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    futures::pin_mut!(sink);
    sink.send(data).await?;
    sink.finish().await.map(|_| ())
}

/// Maps a sample write's error; a row without a partition (one dropped by another
/// process's retention) makes this process forget which partitions exist, so that the
/// retry creates them again.
fn missing_partition(inner: &Inner, e: tokio_postgres::Error) -> datanexus_store::Error {
    if e.code() == Some(&SqlState::CHECK_VIOLATION) {
        inner.partitions.forget();
    }
    pg_error(&inner.target, e)
}

/// Writes events (idempotent on id; a rewrite replaces the event).
pub(super) async fn write_events(inner: &Inner, events: &[StoredEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    // The last copy of an id wins, as in the embedded store.
    let mut by_id: std::collections::HashMap<&str, &StoredEvent> =
        std::collections::HashMap::with_capacity(events.len());
    for e in events {
        by_id.insert(&e.id, e);
    }
    let events: Vec<&StoredEvent> = by_id.into_values().collect();
    let ids: Vec<Cow<'_, str>> = events.iter().map(|e| pg_text(&e.id)).collect();
    let sources: Vec<Cow<'_, str>> = events.iter().map(|e| pg_text(&e.source_id)).collect();
    let ts: Vec<i64> = events.iter().map(|e| e.timestamp_ns).collect();
    let payloads: Vec<String> = events
        .iter()
        .map(|e| {
            let obj = Value::Object(e.payload.clone());
            pg_json(&obj).to_string()
        })
        .collect();
    let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    let sources: Vec<&str> = sources.iter().map(AsRef::as_ref).collect();
    let target = inner.target.as_str();
    let pg = |e| pg_error(target, e);
    let mut client = inner.client().await?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(pg)?;
    tx.execute(
        "INSERT INTO dn_events (id, source_id, ts, payload) \
         SELECT i, s, t, p::jsonb FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS x(i, s, t, p) \
         ON CONFLICT (id) DO UPDATE \
         SET source_id = EXCLUDED.source_id, ts = EXCLUDED.ts, payload = EXCLUDED.payload",
        &[&ids, &sources, &ts, &payloads],
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    inner.note_written(events.len());
    Ok(())
}

/// Writes stream results with one `INSERT … ON CONFLICT (client_id, seq) DO UPDATE`
/// (a redelivery rewrites the row).
pub(super) async fn write_results(inner: &Inner, results: &[StoredResult]) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    // The last copy of a (client, seq) wins, as in the embedded store.
    let mut by_key: std::collections::HashMap<(&str, u64), &StoredResult> =
        std::collections::HashMap::with_capacity(results.len());
    for r in results {
        by_key.insert((&r.client_id, r.seq), r);
    }
    let rows: Vec<&StoredResult> = by_key.into_values().collect();
    let text = |f: fn(&StoredResult) -> &str| -> Vec<String> {
        rows.iter().map(|r| pg_text(f(r)).into_owned()).collect()
    };
    let clients = text(|r| &r.client_id);
    let names = text(|r| &r.event_name);
    let processors = text(|r| &r.processor_id);
    let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let seqs: Vec<i64> = rows.iter().map(|r| big(r.seq)).collect();
    let partitions: Vec<i32> = rows
        .iter()
        .map(|r| i32::try_from(r.event_partition).unwrap_or(i32::MAX))
        .collect();
    let offsets: Vec<i64> = rows.iter().map(|r| big(r.event_offset)).collect();
    let numbers: Vec<i32> = rows.iter().map(|r| r.number).collect();
    let values: Vec<Option<i32>> = rows
        .iter()
        .map(|r| match r.outcome {
            Outcome::Value(v) => Some(v),
            Outcome::Error(_) => None,
        })
        .collect();
    let errors: Vec<Option<String>> = rows
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Value(_) => None,
            Outcome::Error(e) => Some(pg_text(e).into_owned()),
        })
        .collect();
    let received: Vec<i64> = rows.iter().map(|r| r.received_ns).collect();
    let processed: Vec<i64> = rows.iter().map(|r| r.processed_ns).collect();
    let target = inner.target.as_str();
    let pg = |e| pg_error(target, e);
    let mut client = inner.client().await?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(pg)?;
    tx.execute(
        "INSERT INTO dn_results (client_id, seq, event_partition, event_offset, event_name, \
             number, value, error, received_ns, processed_ns, processor_id) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::bigint[], \
             $5::text[], $6::integer[], $7::integer[], $8::text[], $9::bigint[], \
             $10::bigint[], $11::text[]) \
         ON CONFLICT (client_id, seq) DO UPDATE SET \
             event_partition = EXCLUDED.event_partition, event_offset = EXCLUDED.event_offset, \
             event_name = EXCLUDED.event_name, number = EXCLUDED.number, \
             value = EXCLUDED.value, error = EXCLUDED.error, \
             received_ns = EXCLUDED.received_ns, processed_ns = EXCLUDED.processed_ns, \
             processor_id = EXCLUDED.processor_id",
        &[
            &clients,
            &seqs,
            &partitions,
            &offsets,
            &names,
            &numbers,
            &values,
            &errors,
            &received,
            &processed,
            &processors,
        ],
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    inner.note_written(rows.len());
    Ok(())
}

/// Makes every earlier commit durable: one commit with `synchronous_commit = on`.
pub(super) async fn flush(inner: &Inner) -> Result<()> {
    let target = inner.target.as_str();
    let pg = |e| pg_error(target, e);
    let mut client = inner.client().await?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute(
        "SET LOCAL synchronous_commit = on;
         INSERT INTO dn_flush (id, flushed_at) VALUES (1, now())
         ON CONFLICT (id) DO UPDATE SET flushed_at = EXCLUDED.flushed_at",
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(())
}

/// Kind and help of a measurement as stored.
pub(super) fn parse_kind(kind: &str) -> MetricType {
    MetricType::parse_lenient(kind).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_data_is_postgres_binary_format() {
        let data = copy_data(&[Row {
            series_id: -1,
            ts: 2,
            value: 1.5,
        }]);
        assert_eq!(&data[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(data.len(), 19 + 38 + 2);
        assert_eq!(&data[data.len() - 2..], &[0xff, 0xff]);
        // The first field: length 8, then -1 as a big-endian int8.
        assert_eq!(&data[21..25], &[0, 0, 0, 8]);
        assert_eq!(&data[25..33], &[0xff; 8]);
    }

    #[test]
    fn nul_characters_are_replaced() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(pg_text("ab"), Cow::Borrowed(_)));
        let v = pg_json(&serde_json::json!({"k\u{0}": ["x\u{0}", 1]}));
        assert_eq!(v, serde_json::json!({"k\u{FFFD}": ["x\u{FFFD}", 1]}));
    }
}
