//! Immutable Parquet files of raw events (`events-<seq>.parquet`).
//!
//! Columns (all required): `id` (string), `source_id` (dictionary-encoded string),
//! `timestamp_ns` (INT64, TIMESTAMP(NANOS, UTC), DELTA_BINARY_PACKED), `payload` (the JSON
//! object as a string). Rows are sorted by (`source_id`, `timestamp_ns`, `id`), unique on
//! `id`; zstd; statistics on `source_id` and `timestamp_ns` prune row groups.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampNanosecondType};
use arrow_array::{
    ArrayAccessor, ArrayRef, DictionaryArray, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::metadata::RowGroupMetaData;

use super::fsutil::{corrupt, io_err, remove_quietly};
use super::parquet_util::{
    ColumnLayout, WriteOptions, bytes_stats, dict_array, i64_stats, writer_props,
};
use datanexus_store::{Error, Result, StoredEvent, TimeRange};

const LAYOUT: ColumnLayout<'static> = ColumnLayout {
    kind: "events/1",
    dictionary: &["source_id"],
    delta: &["timestamp_ns"],
    byte_stream_split: &[],
    sorted_by: &[1, 2, 0],
};

/// An event as read back, its payload still JSON text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventRow {
    /// Event id.
    pub(crate) id: String,
    /// Source.
    pub(crate) source_id: String,
    /// Nanoseconds since the Unix epoch.
    pub(crate) timestamp_ns: i64,
    /// The JSON object.
    pub(crate) payload: String,
}

/// A live events file.
#[derive(Debug)]
pub(crate) struct EventFile {
    /// Sequence number: a higher one holds newer writes.
    pub(crate) seq: u64,
    /// Where it is.
    pub(crate) path: PathBuf,
    /// Rows.
    pub(crate) rows: u64,
    /// Size on disk.
    pub(crate) bytes: u64,
    /// Smallest timestamp.
    pub(crate) min_ts: i64,
    /// Greatest timestamp.
    pub(crate) max_ts: i64,
    meta: ArrowReaderMetadata,
    /// Set once no manifest names the file: it is deleted when the last reader drops it.
    obsolete: AtomicBool,
}

/// The Arrow schema of events files.
pub(crate) fn schema() -> SchemaRef {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source_id", dict, false),
        Field::new("timestamp_ns", ts, false),
        Field::new("payload", DataType::Utf8, false),
    ]))
}

/// Writes `rows` (any order, ids unique) to a new file at `path` and fsyncs it.
///
/// # Errors
/// I/O and encoding failures; the caller deletes the partial file.
pub(crate) fn write(
    path: &Path,
    seq: u64,
    mut rows: Vec<EventRow>,
    opts: &WriteOptions,
) -> Result<EventFile> {
    rows.sort_by(|a, b| {
        (&a.source_id, a.timestamp_ns, &a.id).cmp(&(&b.source_id, b.timestamp_ns, &b.id))
    });
    let fail = |e: String| Error::Internal(format!("writing {}: {e}", path.display()));
    let batch = build_batch(&rows).map_err(|e| fail(e.to_string()))?;
    let file = File::create(path).map_err(io_err("create", path))?;
    let mut w = ArrowWriter::try_new(file, schema(), Some(writer_props(opts, &LAYOUT)))
        .map_err(|e| fail(e.to_string()))?;
    w.write(&batch).map_err(|e| fail(e.to_string()))?;
    let file = w.into_inner().map_err(|e| fail(e.to_string()))?;
    file.sync_all().map_err(io_err("fsync", path))?;
    EventFile::open(path, seq)
}

fn build_batch(rows: &[EventRow]) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let mut sources: Vec<String> = Vec::new();
    let mut keys = Vec::with_capacity(rows.len());
    for r in rows {
        // Rows are sorted by source, so equal sources are adjacent.
        if sources.last() != Some(&r.source_id) {
            sources.push(r.source_id.clone());
        }
        keys.push(i32::try_from(sources.len() - 1).unwrap_or(i32::MAX));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.id.as_str()),
        )),
        dict_array(keys, sources)?,
        Arc::new(
            TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.timestamp_ns))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.payload.as_str()),
        )),
    ];
    RecordBatch::try_new(schema(), columns)
}

impl EventFile {
    /// Opens an existing file (footer only).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the footer cannot be read or has another schema.
    pub(crate) fn open(path: &Path, seq: u64) -> Result<EventFile> {
        let file = File::open(path).map_err(io_err("open", path))?;
        let bytes = file.metadata().map_err(io_err("stat", path))?.len();
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| corrupt(path)(e.to_string()))?;
        if meta.schema().fields() != schema().fields() {
            return Err(corrupt(path)(format!(
                "unexpected schema {:?}",
                meta.schema()
            )));
        }
        let md = meta.metadata();
        let rows = u64::try_from(md.file_metadata().num_rows()).unwrap_or(0);
        let ranges = md
            .row_groups()
            .iter()
            .filter_map(|rg| rg.column(2).statistics().and_then(i64_stats));
        let (min_ts, max_ts) = ranges.fold((i64::MAX, i64::MIN), |(lo, hi), (a, b)| {
            (lo.min(a), hi.max(b))
        });
        let (min_ts, max_ts) = if rows == 0 { (0, 0) } else { (min_ts, max_ts) };
        Ok(EventFile {
            seq,
            path: path.to_path_buf(),
            rows,
            bytes,
            min_ts,
            max_ts,
            meta,
            obsolete: AtomicBool::new(false),
        })
    }

    /// Calls `sink` for every row of `source` (all when `None`) in `range`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the file cannot be decoded.
    pub(crate) fn read(
        &self,
        source: Option<&str>,
        range: &TimeRange,
        mut sink: impl FnMut(EventRow),
    ) -> Result<()> {
        if range.start_ns.is_some_and(|s| s > self.max_ts)
            || range.end_ns.is_some_and(|e| e < self.min_ts)
        {
            return Ok(());
        }
        let groups: Vec<usize> = self
            .meta
            .metadata()
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, rg)| group_may_match(rg, source, range))
            .map(|(i, _)| i)
            .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let bad = corrupt(&self.path);
        let file = File::open(&self.path).map_err(io_err("open", &self.path))?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_projection(ProjectionMask::all())
            .with_row_groups(groups)
            .build();
        let reader = match reader {
            Ok(r) => r,
            Err(e) => return Err(bad(e.to_string())),
        };
        for batch in reader {
            let batch = batch.map_err(|e| corrupt(&self.path)(e.to_string()))?;
            rows_of(&batch, source, range, &mut sink).map_err(corrupt(&self.path))?;
        }
        Ok(())
    }
}

fn rows_of(
    batch: &RecordBatch,
    source: Option<&str>,
    range: &TimeRange,
    sink: &mut impl FnMut(EventRow),
) -> std::result::Result<(), String> {
    let ids = batch
        .column(0)
        .as_string_opt::<i32>()
        .ok_or("id is not a string")?;
    let dict: &DictionaryArray<Int32Type> = batch
        .column(1)
        .as_dictionary_opt()
        .ok_or("source_id is not a dictionary")?;
    let sources = dict
        .downcast_dict::<StringArray>()
        .ok_or("source_id values are not strings")?;
    let ts = batch
        .column(2)
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or("timestamp_ns has the wrong type")?;
    let payloads = batch
        .column(3)
        .as_string_opt::<i32>()
        .ok_or("payload is not a string")?;
    for i in 0..batch.num_rows() {
        let (t, s) = (ts.value(i), sources.value(i));
        if range.contains(t) && source.is_none_or(|want| want == s) {
            sink(EventRow {
                id: ids.value(i).to_owned(),
                source_id: s.to_owned(),
                timestamp_ns: t,
                payload: payloads.value(i).to_owned(),
            });
        }
    }
    Ok(())
}

fn group_may_match(rg: &RowGroupMetaData, source: Option<&str>, range: &TimeRange) -> bool {
    let src = rg.column(1).statistics().and_then(bytes_stats);
    let src_ok = match (source, src) {
        (Some(want), Some((lo, hi))) => lo <= want.as_bytes() && want.as_bytes() <= hi,
        _ => true,
    };
    let ts = rg.column(2).statistics().and_then(i64_stats);
    let ts_ok = ts.is_none_or(|(lo, hi)| {
        range.start_ns.is_none_or(|s| hi >= s) && range.end_ns.is_none_or(|e| lo <= e)
    });
    src_ok && ts_ok && rg.num_rows() > 0
}

/// The row form of a stored event.
pub(crate) fn to_row(e: &StoredEvent) -> EventRow {
    EventRow {
        id: e.id.clone(),
        source_id: e.source_id.clone(),
        timestamp_ns: e.timestamp_ns,
        payload: serde_json::Value::Object(e.payload.clone()).to_string(),
    }
}

/// Parses a row back into a stored event.
///
/// # Errors
/// [`Error::Corrupt`] when the payload is not a JSON object.
pub(crate) fn from_row(r: EventRow, path: &Path) -> Result<StoredEvent> {
    let payload = match serde_json::from_str::<serde_json::Value>(&r.payload) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(other) => {
            return Err(corrupt(path)(format!(
                "payload of event {:?} is not an object: {other}",
                r.id
            )));
        }
        Err(e) => return Err(corrupt(path)(format!("payload of event {:?}: {e}", r.id))),
    };
    Ok(StoredEvent {
        id: r.id,
        source_id: r.source_id,
        timestamp_ns: r.timestamp_ns,
        payload,
    })
}

impl EventFile {
    /// Marks the file as no longer live: it is deleted once nothing reads it.
    pub(crate) fn retire(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for EventFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            remove_quietly(&self.path);
        }
    }
}
