//! Immutable Parquet files of stream results (`results-<seq>.parquet`), with an
//! in-memory index on (client, seq).
//!
//! Columns (required unless said): `client_id` (dictionary string), `seq` (INT64,
//! DELTA_BINARY_PACKED), `event_partition` (INT64), `event_offset` (INT64, delta),
//! `event_name` (dictionary string), `number` (INT32), `value` (INT32, null for an
//! error), `error` (string, null for a value), `received_ns` and `processed_ns`
//! (TIMESTAMP(NANOS, UTC), delta), `processor_id` (dictionary string). Rows are sorted
//! by (`client_id`, `seq`), unique on them; zstd; pages of at most
//! [`PAGE_ROWS`] rows with a page index.
//!
//! The index: for every client, the row where its rows start and their seqs (8 bytes
//! per result, built from the `client_id` and `seq` columns when the file is opened).
//! A replay picks the rows it returns from the index and reads only those
//! ([`ResultFile::read_rows`], a row selection over the page index): it never scans a
//! client's history.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampNanosecondType};
use arrow_array::{
    Array, ArrayAccessor, ArrayRef, DictionaryArray, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::metadata::PageIndexPolicy;

use super::fsutil::{corrupt, io_err, remove_quietly};
use super::parquet_util::{ColumnLayout, WriteOptions, dict_array, i64_stats, writer_props};
use datanexus_store::{Error, Outcome, Result, StoredResult};

/// Most rows per data page: a replay of a few results decodes at most this many rows
/// per column around each of them.
pub(crate) const PAGE_ROWS: usize = 1024;

const LAYOUT: ColumnLayout<'static> = ColumnLayout {
    kind: "results/1",
    dictionary: &["client_id", "event_name", "processor_id"],
    delta: &["seq", "event_offset", "received_ns", "processed_ns"],
    byte_stream_split: &[],
    sorted_by: &[0, 1],
};

/// Where one client's rows are in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientRows {
    /// The row of its first result.
    pub(crate) first_row: usize,
    /// Its seqs, ascending (row `first_row + i` holds `seqs[i]`).
    pub(crate) seqs: Vec<u64>,
}

/// A live results file.
#[derive(Debug)]
pub(crate) struct ResultFile {
    /// Sequence number: a higher one holds newer writes.
    pub(crate) seq: u64,
    /// Where it is.
    pub(crate) path: PathBuf,
    /// Rows.
    pub(crate) rows: u64,
    /// Size on disk.
    pub(crate) bytes: u64,
    /// Smallest `processed_ns`.
    pub(crate) min_processed_ns: i64,
    /// Greatest `processed_ns` (retention drops the file once it is older).
    pub(crate) max_processed_ns: i64,
    /// The index on (client, seq).
    pub(crate) clients: BTreeMap<String, ClientRows>,
    meta: ArrowReaderMetadata,
    /// Set once no manifest names the file: it is deleted when the last reader drops it.
    obsolete: AtomicBool,
}

/// The Arrow schema of results files.
pub(crate) fn schema() -> SchemaRef {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let ts = || DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("client_id", dict(), false),
        Field::new("seq", DataType::Int64, false),
        Field::new("event_partition", DataType::Int64, false),
        Field::new("event_offset", DataType::Int64, false),
        Field::new("event_name", dict(), false),
        Field::new("number", DataType::Int32, false),
        Field::new("value", DataType::Int32, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("received_ns", ts(), false),
        Field::new("processed_ns", ts(), false),
        Field::new("processor_id", dict(), false),
    ]))
}

/// Writes `rows` (any order, unique on (client, seq)) to a new file at `path` and
/// fsyncs it.
///
/// # Errors
/// I/O and encoding failures; the caller deletes the partial file.
pub(crate) fn write(
    path: &Path,
    seq: u64,
    mut rows: Vec<StoredResult>,
    opts: &WriteOptions,
) -> Result<ResultFile> {
    rows.sort_by(|a, b| (&a.client_id, a.seq).cmp(&(&b.client_id, b.seq)));
    let fail = |e: String| Error::Internal(format!("writing {}: {e}", path.display()));
    let batch = build_batch(&rows).map_err(|e| fail(e.to_string()))?;
    let props = writer_props(opts, &LAYOUT)
        .into_builder()
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .build();
    let file = File::create(path).map_err(io_err("create", path))?;
    let mut w =
        ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| fail(e.to_string()))?;
    w.write(&batch).map_err(|e| fail(e.to_string()))?;
    let file = w.into_inner().map_err(|e| fail(e.to_string()))?;
    file.sync_all().map_err(io_err("fsync", path))?;
    ResultFile::open(path, seq)
}

/// A dictionary column of `values` (any order).
fn dict_of<'a>(
    values: impl Iterator<Item = &'a str>,
) -> std::result::Result<ArrayRef, arrow_schema::ArrowError> {
    let mut distinct: Vec<String> = Vec::new();
    let mut index: std::collections::HashMap<&'a str, i32> = std::collections::HashMap::new();
    let mut keys = Vec::new();
    for v in values {
        let key = *index.entry(v).or_insert_with(|| {
            distinct.push(v.to_owned());
            i32::try_from(distinct.len() - 1).unwrap_or(i32::MAX)
        });
        keys.push(key);
    }
    dict_array(keys, distinct)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn build_batch(
    rows: &[StoredResult],
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let ts = |f: fn(&StoredResult) -> i64| {
        Arc::new(
            TimestampNanosecondArray::from_iter_values(rows.iter().map(f)).with_timezone("UTC"),
        ) as ArrayRef
    };
    let columns: Vec<ArrayRef> = vec![
        dict_of(rows.iter().map(|r| r.client_id.as_str()))?,
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| as_i64(r.seq)),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| i64::from(r.event_partition)),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| as_i64(r.event_offset)),
        )),
        dict_of(rows.iter().map(|r| r.event_name.as_str()))?,
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.number))),
        Arc::new(Int32Array::from_iter(rows.iter().map(
            |r| match r.outcome {
                Outcome::Value(v) => Some(v),
                Outcome::Error(_) => None,
            },
        ))),
        Arc::new(StringArray::from_iter(rows.iter().map(
            |r| match &r.outcome {
                Outcome::Value(_) => None,
                Outcome::Error(e) => Some(e.as_str()),
            },
        ))),
        ts(|r| r.received_ns),
        ts(|r| r.processed_ns),
        dict_of(rows.iter().map(|r| r.processor_id.as_str()))?,
    ];
    RecordBatch::try_new(schema(), columns)
}

impl ResultFile {
    /// Opens an existing file: its footer and page index, and its (client, seq) index
    /// from the first two columns.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the file cannot be read or has another schema.
    pub(crate) fn open(path: &Path, seq: u64) -> Result<ResultFile> {
        let file = File::open(path).map_err(io_err("open", path))?;
        let bytes = file.metadata().map_err(io_err("stat", path))?.len();
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let meta =
            ArrowReaderMetadata::load(&file, options).map_err(|e| corrupt(path)(e.to_string()))?;
        if meta.schema().fields() != schema().fields() {
            return Err(corrupt(path)(format!(
                "unexpected schema {:?}",
                meta.schema()
            )));
        }
        let md = meta.metadata();
        let rows = u64::try_from(md.file_metadata().num_rows()).unwrap_or(0);
        let (min_processed_ns, max_processed_ns) = md
            .row_groups()
            .iter()
            .filter_map(|rg| rg.column(9).statistics().and_then(i64_stats))
            .fold((i64::MAX, i64::MIN), |(lo, hi), (a, b)| {
                (lo.min(a), hi.max(b))
            });
        let mut clients: BTreeMap<String, ClientRows> = BTreeMap::new();
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
            .with_projection(ProjectionMask::roots(
                md.file_metadata().schema_descr(),
                [0, 1],
            ))
            .build()
            .map_err(|e| corrupt(path)(e.to_string()))?;
        let mut row = 0usize;
        for batch in reader {
            let batch = batch.map_err(|e| corrupt(path)(e.to_string()))?;
            index_batch(&batch, &mut row, &mut clients).map_err(corrupt(path))?;
        }
        Ok(ResultFile {
            seq,
            path: path.to_path_buf(),
            rows,
            bytes,
            min_processed_ns,
            max_processed_ns,
            clients,
            meta,
            obsolete: AtomicBool::new(false),
        })
    }

    /// The rows at `rows` (ascending row numbers), read with a row selection: only the
    /// pages holding them are decoded.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the file cannot be decoded.
    pub(crate) fn read_rows(&self, rows: &[usize]) -> Result<Vec<StoredResult>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let total = usize::try_from(self.rows).unwrap_or(usize::MAX);
        let selection = RowSelection::from_consecutive_ranges(ranges(rows).into_iter(), total);
        self.read(Some(selection))
    }

    /// Every row (compaction).
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the file cannot be decoded.
    pub(crate) fn read_all(&self) -> Result<Vec<StoredResult>> {
        self.read(None)
    }

    fn read(&self, selection: Option<RowSelection>) -> Result<Vec<StoredResult>> {
        let file = File::open(&self.path).map_err(io_err("open", &self.path))?;
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
                .with_projection(ProjectionMask::all());
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        let reader = builder
            .build()
            .map_err(|e| corrupt(&self.path)(e.to_string()))?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| corrupt(&self.path)(e.to_string()))?;
            rows_of(&batch, &mut out).map_err(corrupt(&self.path))?;
        }
        Ok(out)
    }

    /// Marks the file as no longer live: it is deleted once nothing reads it.
    pub(crate) fn retire(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for ResultFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            remove_quietly(&self.path);
        }
    }
}

/// Ascending row numbers as runs of consecutive rows.
fn ranges(rows: &[usize]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for &r in rows {
        match out.last_mut() {
            Some(last) if last.end == r => last.end = r + 1,
            _ => out.push(r..r + 1),
        }
    }
    out
}

fn strings(
    batch: &RecordBatch,
    column: usize,
    name: &str,
) -> std::result::Result<Vec<String>, String> {
    let dict: &DictionaryArray<Int32Type> = batch
        .column(column)
        .as_dictionary_opt()
        .ok_or_else(|| format!("{name} is not a dictionary"))?;
    let values = dict
        .downcast_dict::<StringArray>()
        .ok_or_else(|| format!("{name} values are not strings"))?;
    Ok((0..batch.num_rows())
        .map(|i| values.value(i).to_owned())
        .collect())
}

fn int64s<'a>(
    batch: &'a RecordBatch,
    column: usize,
    name: &str,
) -> std::result::Result<&'a arrow_array::PrimitiveArray<Int64Type>, String> {
    batch
        .column(column)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| format!("{name} is not INT64"))
}

fn times<'a>(
    batch: &'a RecordBatch,
    column: usize,
    name: &str,
) -> std::result::Result<&'a arrow_array::PrimitiveArray<TimestampNanosecondType>, String> {
    batch
        .column(column)
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| format!("{name} has the wrong type"))
}

fn as_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Adds the (client, seq) of `batch` (columns 0 and 1 only) to the index.
fn index_batch(
    batch: &RecordBatch,
    row: &mut usize,
    clients: &mut BTreeMap<String, ClientRows>,
) -> std::result::Result<(), String> {
    let dict: &DictionaryArray<Int32Type> = batch
        .column(0)
        .as_dictionary_opt()
        .ok_or("client_id is not a dictionary")?;
    let names = dict
        .downcast_dict::<StringArray>()
        .ok_or("client_id values are not strings")?;
    let seqs = int64s(batch, 1, "seq")?;
    for i in 0..batch.num_rows() {
        let client = names.value(i);
        let entry = match clients.get_mut(client) {
            Some(entry) => entry,
            None => clients.entry(client.to_owned()).or_insert(ClientRows {
                first_row: *row,
                seqs: Vec::new(),
            }),
        };
        entry.seqs.push(as_u64(seqs.value(i)));
        *row += 1;
    }
    Ok(())
}

fn rows_of(batch: &RecordBatch, out: &mut Vec<StoredResult>) -> std::result::Result<(), String> {
    let clients = strings(batch, 0, "client_id")?;
    let seqs = int64s(batch, 1, "seq")?;
    let partitions = int64s(batch, 2, "event_partition")?;
    let offsets = int64s(batch, 3, "event_offset")?;
    let names = strings(batch, 4, "event_name")?;
    let numbers = batch
        .column(5)
        .as_primitive_opt::<Int32Type>()
        .ok_or("number is not INT32")?;
    let values = batch
        .column(6)
        .as_primitive_opt::<Int32Type>()
        .ok_or("value is not INT32")?;
    let errors = batch
        .column(7)
        .as_string_opt::<i32>()
        .ok_or("error is not a string")?;
    let received = times(batch, 8, "received_ns")?;
    let processed = times(batch, 9, "processed_ns")?;
    let processors = strings(batch, 10, "processor_id")?;
    let rows = clients.into_iter().zip(names).zip(processors).enumerate();
    for (i, ((client_id, event_name), processor_id)) in rows {
        let outcome = if values.is_valid(i) {
            Outcome::Value(values.value(i))
        } else if errors.is_valid(i) {
            Outcome::Error(errors.value(i).to_owned())
        } else {
            return Err(format!(
                "result {client_id}/{} has no outcome",
                seqs.value(i)
            ));
        };
        out.push(StoredResult {
            client_id,
            seq: as_u64(seqs.value(i)),
            event_partition: u32::try_from(partitions.value(i)).unwrap_or(0),
            event_offset: as_u64(offsets.value(i)),
            event_name,
            number: numbers.value(i),
            outcome,
            received_ns: received.value(i),
            processed_ns: processed.value(i),
            processor_id,
        });
    }
    Ok(())
}
