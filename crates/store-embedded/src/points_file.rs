//! Immutable Parquet files of samples (`points-<seq>.parquet`).
//!
//! Columns (all required): `series_id` (UINT64), `measurement`, `field`, `labels`
//! (dictionary-encoded strings; `labels` is the canonical JSON object, keys sorted),
//! `timestamp_ns` (INT64, TIMESTAMP(NANOS, UTC), DELTA_BINARY_PACKED), `value` (DOUBLE,
//! BYTE_STREAM_SPLIT). Rows are sorted by (`series_id`, `timestamp_ns`) and unique on
//! that pair; zstd; row-group and page statistics are written and used to skip row groups
//! whose series or time range cannot match.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, ArrayAccessor, ArrayRef, DictionaryArray, RecordBatch, StringArray};
use arrow_array::{Float64Array, TimestampNanosecondArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datanexus_model::Labels;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::metadata::RowGroupMetaData;

pub(crate) use super::catalog::SeriesFilter;
use super::columns::Columns;
use super::fsutil::{corrupt, io_err, remove_quietly};
use super::parquet_util::{ColumnLayout, WriteOptions, dict_array, i64_stats, writer_props};
use datanexus_store::{Error, Result, SeriesKey, TimeRange};

/// Rows decoded per record batch when reading.
const READ_BATCH_ROWS: usize = 16 * 1024;
/// Rows per record batch handed to the writer.
const WRITE_BATCH_ROWS: usize = 64 * 1024;

/// Encodings and sort order of points files.
const LAYOUT: ColumnLayout<'static> = ColumnLayout {
    kind: "points/1",
    dictionary: &["series_id", "measurement", "field", "labels"],
    delta: &["timestamp_ns"],
    byte_stream_split: &["value"],
    sorted_by: &[0, 4],
};

/// Statistics of one series inside one file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Run {
    /// Rows (distinct timestamps).
    pub(crate) rows: u64,
    /// Smallest timestamp.
    pub(crate) min_ts: i64,
    /// Greatest timestamp.
    pub(crate) max_ts: i64,
    /// Value at `max_ts`.
    pub(crate) last_value: f64,
}

/// One series to write: id, key and samples.
pub(crate) struct SeriesRows<'a> {
    /// Series id.
    pub(crate) id: u64,
    /// Series key.
    pub(crate) key: &'a SeriesKey,
    /// Samples.
    pub(crate) cols: &'a Columns,
}

/// A live points file and what is known about it without reading it.
#[derive(Debug)]
pub(crate) struct PointFile {
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
    /// Per-series statistics.
    pub(crate) runs: HashMap<u64, Run>,
    meta: ArrowReaderMetadata,
    /// Set once no manifest names the file: it is deleted when the last reader drops it.
    obsolete: AtomicBool,
}

/// The Arrow schema of points files.
pub(crate) fn schema() -> SchemaRef {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("series_id", DataType::UInt64, false),
        Field::new("measurement", dict.clone(), false),
        Field::new("field", dict.clone(), false),
        Field::new("labels", dict, false),
        Field::new("timestamp_ns", ts, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// The canonical JSON object of `labels` (keys sorted).
pub(crate) fn labels_json(labels: &Labels) -> String {
    let map: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn parse_labels(s: &str) -> std::result::Result<Labels, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(s).map_err(|e| format!("labels {s:?}: {e}"))?;
    let pairs = map.into_iter().map(|(k, v)| match v {
        serde_json::Value::String(v) => Ok((k, v)),
        other => Err(format!("label {k:?} has non-string value {other}")),
    });
    Labels::new(pairs.collect::<std::result::Result<Vec<_>, _>>()?).map_err(|e| e.to_string())
}

/// Writes `series` (sorted by id, each non-empty) to a new file at `path` and fsyncs it.
///
/// # Errors
/// I/O and encoding failures; the caller deletes the partial file.
pub(crate) fn write(
    path: &Path,
    seq: u64,
    series: &[SeriesRows<'_>],
    opts: &WriteOptions,
) -> Result<PointFile> {
    let schema = schema();
    let file = File::create(path).map_err(io_err("create", path))?;
    let props = writer_props(opts, &LAYOUT);
    let fail = |e: String| Error::Internal(format!("writing {}: {e}", path.display()));
    let mut w = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))
        .map_err(|e| fail(e.to_string()))?;
    let mut start = 0;
    while start < series.len() {
        let mut end = start;
        let mut rows = 0;
        while end < series.len()
            && (rows == 0 || rows + series.get(end).map_or(0, |s| s.cols.len()) <= WRITE_BATCH_ROWS)
        {
            rows += series.get(end).map_or(0, |s| s.cols.len());
            end += 1;
        }
        let batch = build_batch(&schema, series.get(start..end).unwrap_or_default())
            .map_err(|e| fail(e.to_string()))?;
        w.write(&batch).map_err(|e| fail(e.to_string()))?;
        start = end;
    }
    let file = w.into_inner().map_err(|e| fail(e.to_string()))?;
    file.sync_all().map_err(io_err("fsync", path))?;
    let runs = series
        .iter()
        .filter_map(|s| Some((s.id, run_of(s.cols)?)))
        .collect();
    PointFile::load(path, seq, runs)
}

fn run_of(cols: &Columns) -> Option<Run> {
    let last = cols.last()?;
    Some(Run {
        rows: cols.len() as u64,
        min_ts: *cols.ts.first()?,
        max_ts: last.timestamp_ns,
        last_value: last.value,
    })
}

fn build_batch(
    schema: &SchemaRef,
    series: &[SeriesRows<'_>],
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let rows: usize = series.iter().map(|s| s.cols.len()).sum();
    let mut ids = Vec::with_capacity(rows);
    let mut ts = Vec::with_capacity(rows);
    let mut values = Vec::with_capacity(rows);
    let (mut m, mut f, mut l) = (
        Interner::default(),
        Interner::default(),
        Interner::default(),
    );
    let (mut mk, mut fk, mut lk) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for s in series {
        let n = s.cols.len();
        ids.extend(std::iter::repeat_n(s.id, n));
        mk.extend(std::iter::repeat_n(m.intern(&s.key.measurement), n));
        fk.extend(std::iter::repeat_n(f.intern(&s.key.field), n));
        lk.extend(std::iter::repeat_n(
            l.intern(&labels_json(&s.key.labels)),
            n,
        ));
        ts.extend_from_slice(&s.cols.ts);
        values.extend_from_slice(&s.cols.values);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(ids)),
        dict_array(mk, m.values)?,
        dict_array(fk, f.values)?,
        dict_array(lk, l.values)?,
        Arc::new(TimestampNanosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(Float64Array::from(values)),
    ];
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// Assigns dictionary keys to distinct strings.
#[derive(Default)]
struct Interner {
    index: HashMap<String, i32>,
    values: Vec<String>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = i32::try_from(self.values.len()).unwrap_or(i32::MAX);
        self.index.insert(s.to_owned(), i);
        self.values.push(s.to_owned());
        i
    }
}

impl PointFile {
    /// Loads the footer of the file at `path` (already known to hold `runs`).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the footer cannot be read.
    pub(crate) fn load(path: &Path, seq: u64, runs: HashMap<u64, Run>) -> Result<PointFile> {
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
        let rows = runs.values().map(|r| r.rows).sum();
        let min_ts = runs.values().map(|r| r.min_ts).min().unwrap_or(0);
        let max_ts = runs.values().map(|r| r.max_ts).max().unwrap_or(0);
        Ok(PointFile {
            seq,
            path: path.to_path_buf(),
            rows,
            bytes,
            min_ts,
            max_ts,
            runs,
            meta,
            obsolete: AtomicBool::new(false),
        })
    }

    /// Opens an existing file, scanning it for its series keys and statistics.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when it cannot be decoded.
    pub(crate) fn open(path: &Path, seq: u64) -> Result<(PointFile, Vec<(u64, SeriesKey)>)> {
        let mut pf = PointFile::load(path, seq, HashMap::new())?;
        let mut keys = Vec::new();
        let mut runs: HashMap<u64, Run> = HashMap::new();
        let all: Vec<usize> = (0..pf.meta.metadata().num_row_groups()).collect();
        pf.scan(&[0, 1, 2, 3, 4, 5], all, |batch| {
            for_each_run(batch, |id, range| {
                let ts = batch
                    .column(4)
                    .as_primitive::<TimestampNanosecondType>()
                    .values();
                let values = batch.column(5).as_primitive::<Float64Type>().values();
                let (Some(ts), Some(values)) = (ts.get(range.clone()), values.get(range.clone()))
                else {
                    return Ok(());
                };
                if !runs.contains_key(&id) {
                    keys.push((id, key_at(batch, range.start)?));
                }
                let r = runs.entry(id).or_insert(Run {
                    rows: 0,
                    min_ts: i64::MAX,
                    max_ts: i64::MIN,
                    last_value: 0.0,
                });
                r.rows += ts.len() as u64;
                r.min_ts = r.min_ts.min(*ts.first().unwrap_or(&i64::MAX));
                r.max_ts = r.max_ts.max(*ts.last().unwrap_or(&i64::MIN));
                r.last_value = *values.last().unwrap_or(&0.0);
                Ok(())
            })
        })?;
        pf.rows = runs.values().map(|r| r.rows).sum();
        pf.min_ts = runs.values().map(|r| r.min_ts).min().unwrap_or(0);
        pf.max_ts = runs.values().map(|r| r.max_ts).max().unwrap_or(0);
        pf.runs = runs;
        Ok((pf, keys))
    }

    /// Calls `sink(series, timestamps, values)` for every wanted series' samples in
    /// `range` (possibly several times per series, in ascending time order).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the file cannot be decoded.
    pub(crate) fn read(
        &self,
        filter: &SeriesFilter,
        range: &TimeRange,
        mut sink: impl FnMut(u64, &[i64], &[f64]),
    ) -> Result<()> {
        if range.start_ns.is_some_and(|s| s > self.max_ts)
            || range.end_ns.is_some_and(|e| e < self.min_ts)
        {
            return Ok(());
        }
        if let SeriesFilter::Ids(ids) = filter
            && !ids.iter().any(|id| self.runs.contains_key(id))
        {
            return Ok(());
        }
        let groups = self.row_groups_for(filter, range);
        if groups.is_empty() {
            return Ok(());
        }
        self.scan(&[0, 4, 5], groups, |batch| {
            let ts = batch
                .column(1)
                .as_primitive::<TimestampNanosecondType>()
                .values();
            let values = batch.column(2).as_primitive::<Float64Type>().values();
            for_each_run(batch, |id, rows| {
                if filter.contains(id) {
                    let (ts, values) = (
                        ts.get(rows.clone()).unwrap_or_default(),
                        values.get(rows).unwrap_or_default(),
                    );
                    let r = super::columns::slice_bounds(ts, range);
                    sink(
                        id,
                        ts.get(r.clone()).unwrap_or_default(),
                        values.get(r).unwrap_or_default(),
                    );
                }
                Ok(())
            })
        })
    }

    /// The row groups whose statistics say they may hold wanted rows.
    pub(crate) fn row_groups_for(&self, filter: &SeriesFilter, range: &TimeRange) -> Vec<usize> {
        let groups = self.meta.metadata().row_groups().iter().enumerate();
        groups
            .filter(|(_, rg)| group_may_match(rg, filter, range))
            .map(|(i, _)| i)
            .collect()
    }

    /// Number of row groups.
    #[cfg(test)]
    pub(crate) fn row_group_count(&self) -> usize {
        self.meta.metadata().num_row_groups()
    }

    /// Decodes `columns` of `groups`, handing each batch to `f`.
    fn scan(
        &self,
        columns: &[usize],
        groups: Vec<usize>,
        mut f: impl FnMut(&RecordBatch) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let file = File::open(&self.path).map_err(io_err("open", &self.path))?;
        let bad = corrupt(&self.path);
        let mask = ProjectionMask::roots(self.meta.parquet_schema(), columns.iter().copied());
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_projection(mask)
            .with_row_groups(groups)
            .with_batch_size(READ_BATCH_ROWS)
            .build();
        let reader = match reader {
            Ok(r) => r,
            Err(e) => return Err(bad(e.to_string())),
        };
        for batch in reader {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => return Err(corrupt(&self.path)(e.to_string())),
            };
            if let Err(e) = f(&batch) {
                return Err(corrupt(&self.path)(e));
            }
        }
        Ok(())
    }
}

/// Calls `f(series_id, rows)` for each run of equal ids in column 0 of `batch`.
fn for_each_run(
    batch: &RecordBatch,
    mut f: impl FnMut(u64, std::ops::Range<usize>) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let ids = batch
        .column(0)
        .as_primitive_opt::<UInt64Type>()
        .ok_or("series_id is not UINT64")?
        .values();
    let mut start = 0;
    while let Some(&id) = ids.get(start) {
        let len = ids
            .get(start..)
            .unwrap_or_default()
            .iter()
            .position(|&x| x != id)
            .unwrap_or(ids.len() - start);
        f(id, start..start + len)?;
        start += len;
    }
    Ok(())
}

fn key_at(batch: &RecordBatch, row: usize) -> std::result::Result<SeriesKey, String> {
    let text = |col: usize| -> std::result::Result<String, String> {
        let dict: &DictionaryArray<Int32Type> = batch
            .column(col)
            .as_dictionary_opt()
            .ok_or("expected a dictionary column")?;
        let typed = dict
            .downcast_dict::<StringArray>()
            .ok_or("expected string dictionary values")?;
        if row >= typed.len() {
            return Err("row out of range".into());
        }
        Ok(typed.value(row).to_owned())
    };
    Ok(SeriesKey {
        measurement: text(1)?,
        field: text(2)?,
        labels: parse_labels(&text(3)?)?,
    })
}

fn group_may_match(rg: &RowGroupMetaData, filter: &SeriesFilter, range: &TimeRange) -> bool {
    let ids = rg.column(0).statistics().and_then(i64_stats);
    let ids_ok = ids.is_none_or(|(lo, hi)| filter.any_in(lo as u64, hi as u64));
    let ts = rg.column(4).statistics().and_then(i64_stats);
    let ts_ok = ts.is_none_or(|(lo, hi)| {
        range.start_ns.is_none_or(|s| hi >= s) && range.end_ns.is_none_or(|e| lo <= e)
    });
    ids_ok && ts_ok
}

impl PointFile {
    /// Marks the file as no longer live: it is deleted once nothing reads it.
    pub(crate) fn retire(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for PointFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            remove_quietly(&self.path);
        }
    }
}
