//! Export files: NDJSON, CSV and Apache Parquet. A job writes each chunk of its range to
//! a part file of its own (so a chunk that fails is rewritten from scratch, and the
//! parts already written survive a restart), then joins the parts in chunk order into
//! the final file.
//!
//! Columns: the time first (RFC 3339 UTC with the precision needed in NDJSON and CSV;
//! a `timestamp[ns, UTC]` in Parquet), then the dataset's columns. NDJSON writes a
//! `null` for a missing value and for a float that JSON cannot hold (NaN, ±inf); CSV
//! leaves the cell empty and writes floats as Rust prints them (`NaN`, `inf`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, TimestampNanosecondArray};
use arrow_schema::{DataType, Field, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::io_error;
use crate::source::{ColumnKind, Row, Schema, Value};
use crate::{Error, Result};

/// The format of an export file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated values with a header line (RFC 4180 quoting).
    Csv,
    /// Apache Parquet, zstd-compressed.
    Parquet,
}

impl FileFormat {
    /// Parses `ndjson` (also `json`), `csv` or `parquet`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the known formats.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ndjson" | "json" | "jsonl" => Ok(FileFormat::Ndjson),
            "csv" => Ok(FileFormat::Csv),
            "parquet" => Ok(FileFormat::Parquet),
            other => Err(Error::Invalid(format!(
                "unknown format {other:?}: expected \"ndjson\", \"csv\" or \"parquet\""
            ))),
        }
    }

    /// The file name extension (also the API name).
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Ndjson => "ndjson",
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }

    /// The media type of a download.
    pub fn content_type(self) -> &'static str {
        match self {
            FileFormat::Ndjson => "application/x-ndjson",
            FileFormat::Csv => "text/csv; charset=utf-8",
            FileFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// Writes rows of one schema to a file.
pub(crate) enum PartWriter {
    /// NDJSON or CSV (parts of CSV have no header: the final file gets one).
    Text {
        out: BufWriter<File>,
        format: FileFormat,
    },
    /// Parquet.
    Parquet(Box<ArrowWriter<File>>),
}

impl PartWriter {
    /// Creates `path` for rows of `schema`.
    pub(crate) fn create(path: &Path, format: FileFormat, schema: &Schema) -> Result<Self> {
        let file = File::create(path).map_err(io_error(path))?;
        Ok(match format {
            FileFormat::Ndjson | FileFormat::Csv => PartWriter::Text {
                out: BufWriter::with_capacity(1 << 20, file),
                format,
            },
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                let w = ArrowWriter::try_new(file, arrow_schema(schema), Some(props))
                    .map_err(|e| parquet_error(path, e))?;
                PartWriter::Parquet(Box::new(w))
            }
        })
    }

    /// Appends `rows`.
    pub(crate) fn write(&mut self, path: &Path, schema: &Schema, rows: &[Row]) -> Result<()> {
        match self {
            PartWriter::Text { out, format } => {
                let mut line = String::new();
                for row in rows {
                    line.clear();
                    match format {
                        FileFormat::Csv => csv_line(&mut line, row),
                        _ => json_line(&mut line, schema, row),
                    }
                    out.write_all(line.as_bytes()).map_err(io_error(path))?;
                }
                Ok(())
            }
            PartWriter::Parquet(w) => {
                let batch = record_batch(schema, rows).map_err(|e| Error::Io {
                    path: path.display().to_string(),
                    source: std::io::Error::other(e),
                })?;
                w.write(&batch).map_err(|e| parquet_error(path, e))
            }
        }
    }

    /// Completes the file and syncs it to disk.
    pub(crate) fn finish(self, path: &Path) -> Result<()> {
        let file = match self {
            PartWriter::Text { out, .. } => out
                .into_inner()
                .map_err(|e| io_error(path)(e.into_error()))?,
            PartWriter::Parquet(w) => w.into_inner().map_err(|e| parquet_error(path, e))?,
        };
        file.sync_all().map_err(io_error(path))
    }
}

/// Joins the part files, in order, into `target` (CSV gets the header line first,
/// Parquet's parts are read back and rewritten as row groups of one file); syncs it.
/// Returns its size in bytes.
pub(crate) fn join(
    parts: &[std::path::PathBuf],
    target: &Path,
    format: FileFormat,
    schema: &Schema,
) -> Result<u64> {
    match format {
        FileFormat::Ndjson | FileFormat::Csv => {
            let file = File::create(target).map_err(io_error(target))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            if format == FileFormat::Csv {
                out.write_all(csv_header(schema).as_bytes())
                    .map_err(io_error(target))?;
            }
            for part in parts {
                let mut f = File::open(part).map_err(io_error(part))?;
                std::io::copy(&mut f, &mut out).map_err(io_error(target))?;
            }
            let file = out
                .into_inner()
                .map_err(|e| io_error(target)(e.into_error()))?;
            file.sync_all().map_err(io_error(target))?;
        }
        FileFormat::Parquet => {
            let mut writer = PartWriter::create(target, format, schema)?;
            let PartWriter::Parquet(w) = &mut writer else {
                unreachable!("a parquet writer was created");
            };
            for part in parts {
                let f = File::open(part).map_err(io_error(part))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                    .and_then(|b| b.with_batch_size(64 * 1024).build())
                    .map_err(|e| parquet_error(part, e))?;
                for batch in reader {
                    let batch = batch.map_err(|e| Error::Io {
                        path: part.display().to_string(),
                        source: std::io::Error::other(e),
                    })?;
                    w.write(&batch).map_err(|e| parquet_error(target, e))?;
                }
            }
            writer.finish(target)?;
        }
    }
    let size = std::fs::metadata(target).map_err(io_error(target))?.len();
    Ok(size)
}

/// Reads a whole small file (tests).
#[cfg(test)]
pub(crate) fn read_text(path: &Path) -> String {
    use std::io::Read;
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .expect("read");
    s
}

fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    }
}

pub(crate) fn format_time(ns: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// One NDJSON line: `{"time": "…", "<column>": value, …}`.
pub(crate) fn json_line(out: &mut String, schema: &Schema, row: &Row) {
    use std::fmt::Write as _;
    out.push('{');
    json_str(out, &schema.time_column);
    out.push(':');
    json_str(out, &format_time(row.time_ns));
    for (column, value) in schema.columns.iter().zip(&row.values) {
        out.push(',');
        json_str(out, &column.name);
        out.push(':');
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => out.push_str("null"),
            },
            Value::Text(s) => json_str(out, s),
        }
    }
    out.push_str("}\n");
}

/// `s` as a JSON string (quoted, escaped).
fn json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(s.get(plain..i).unwrap_or_default());
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(s.get(plain..).unwrap_or_default());
    out.push('"');
}

/// A row as a JSON object: `{"<time column>": "…", "<column>": value, …}`.
pub(crate) fn row_json(schema: &Schema, row: &Row) -> serde_json::Value {
    let mut map = serde_json::Map::with_capacity(row.values.len() + 1);
    map.insert(
        schema.time_column.clone(),
        serde_json::Value::String(format_time(row.time_ns)),
    );
    for (column, value) in schema.columns.iter().zip(&row.values) {
        let v = match value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Text(s) => serde_json::Value::String(s.clone()),
        };
        map.insert(column.name.clone(), v);
    }
    serde_json::Value::Object(map)
}

fn csv_header(schema: &Schema) -> String {
    let mut line = String::new();
    csv_cell(&mut line, &schema.time_column);
    for column in &schema.columns {
        line.push(',');
        csv_cell(&mut line, &column.name);
    }
    line.push('\n');
    line
}

fn csv_line(out: &mut String, row: &Row) {
    out.push_str(&format_time(row.time_ns));
    for value in &row.values {
        out.push(',');
        match value {
            Value::Null => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Float(f) => out.push_str(&f.to_string()),
            Value::Text(s) => csv_cell(out, s),
        }
    }
    out.push('\n');
}

/// A cell, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_cell(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn arrow_schema(schema: &Schema) -> Arc<arrow_schema::Schema> {
    let mut fields = vec![Field::new(
        &schema.time_column,
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )];
    for column in &schema.columns {
        let ty = match column.kind {
            ColumnKind::Bool => DataType::Boolean,
            ColumnKind::Int => DataType::Int64,
            ColumnKind::Float => DataType::Float64,
            ColumnKind::Text => DataType::Utf8,
        };
        fields.push(Field::new(&column.name, ty, true));
    }
    Arc::new(arrow_schema::Schema::new(fields))
}

fn record_batch(
    schema: &Schema,
    rows: &[Row],
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.columns.len() + 1);
    arrays.push(Arc::new(
        TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.time_ns))
            .with_timezone("UTC"),
    ));
    for (i, column) in schema.columns.iter().enumerate() {
        let values = rows.iter().map(|r| r.values.get(i).unwrap_or(&Value::Null));
        let array: ArrayRef = match column.kind {
            ColumnKind::Bool => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                values.for_each(|v| match v {
                    Value::Bool(x) => b.append_value(*x),
                    _ => b.append_null(),
                });
                Arc::new(b.finish())
            }
            ColumnKind::Int => {
                let mut b = Int64Builder::with_capacity(rows.len());
                values.for_each(|v| match v {
                    Value::Int(x) => b.append_value(*x),
                    _ => b.append_null(),
                });
                Arc::new(b.finish())
            }
            ColumnKind::Float => {
                let mut b = Float64Builder::with_capacity(rows.len());
                values.for_each(|v| match v {
                    Value::Float(x) => b.append_value(*x),
                    Value::Int(x) => b.append_value(*x as f64),
                    _ => b.append_null(),
                });
                Arc::new(b.finish())
            }
            ColumnKind::Text => {
                let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
                values.for_each(|v| match v {
                    Value::Text(x) => b.append_value(x),
                    Value::Null => b.append_null(),
                    Value::Bool(x) => b.append_value(x.to_string()),
                    Value::Int(x) => b.append_value(x.to_string()),
                    Value::Float(x) => b.append_value(x.to_string()),
                });
                Arc::new(b.finish())
            }
        };
        arrays.push(array);
    }
    RecordBatch::try_new(arrow_schema(schema), arrays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Column, Role};

    fn schema() -> Schema {
        Schema {
            dataset: "t".to_owned(),
            time_column: "time".to_owned(),
            columns: vec![
                Column {
                    name: "host".to_owned(),
                    kind: ColumnKind::Text,
                    role: Role::Tag,
                },
                Column {
                    name: "v".to_owned(),
                    kind: ColumnKind::Float,
                    role: Role::Field,
                },
                Column {
                    name: "n".to_owned(),
                    kind: ColumnKind::Int,
                    role: Role::Field,
                },
            ],
        }
    }

    fn rows() -> Vec<Row> {
        vec![
            Row {
                time_ns: 1_500_000_000,
                values: vec![
                    Value::Text("a,\"b\"".to_owned()),
                    Value::Float(f64::NAN),
                    Value::Int(7),
                ],
            },
            Row {
                time_ns: 2_000_000_000,
                values: vec![Value::Null, Value::Float(2.5), Value::Null],
            },
        ]
    }

    #[test]
    fn json_lines_escape_like_serde_json_and_keep_the_column_order() {
        let schema = schema();
        let tricky = "q\"b\\s\n\r\t\u{1}\u{1f}é😀";
        let row = Row {
            time_ns: -1,
            values: vec![
                Value::Text(tricky.to_owned()),
                Value::Float(-0.0),
                Value::Int(i64::MIN),
            ],
        };
        let mut line = String::new();
        json_line(&mut line, &schema, &row);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, row_json(&schema, &row));
        assert_eq!(parsed["host"], tricky);
        assert!(
            line.starts_with("{\"time\":\"1969-12-31T23:59:59.999999999Z\",\"host\":"),
            "{line}"
        );
        assert!(line.ends_with("}\n"));
    }

    #[test]
    fn parts_join_into_csv_and_ndjson() {
        let dir = tempfile::tempdir().unwrap();
        for format in [FileFormat::Csv, FileFormat::Ndjson] {
            let parts: Vec<_> = (0..2)
                .map(|i| dir.path().join(format!("part-{i}.{}", format.extension())))
                .collect();
            for (part, row) in parts.iter().zip(rows()) {
                let mut w = PartWriter::create(part, format, &schema()).unwrap();
                w.write(part, &schema(), &[row]).unwrap();
                w.finish(part).unwrap();
            }
            let target = dir.path().join(format!("all.{}", format.extension()));
            join(&parts, &target, format, &schema()).unwrap();
            let text = read_text(&target);
            let expected = match format {
                FileFormat::Csv => {
                    "time,host,v,n\n1970-01-01T00:00:01.500Z,\"a,\"\"b\"\"\",NaN,7\n\
                     1970-01-01T00:00:02Z,,2.5,\n"
                }
                _ => {
                    "{\"time\":\"1970-01-01T00:00:01.500Z\",\"host\":\"a,\\\"b\\\"\",\"v\":null,\"n\":7}\n\
                     {\"time\":\"1970-01-01T00:00:02Z\",\"host\":null,\"v\":2.5,\"n\":null}\n"
                }
            };
            assert_eq!(text, expected, "{format:?}");
        }
    }

    #[test]
    fn parquet_parts_join_into_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let parts: Vec<_> = (0..2)
            .map(|i| dir.path().join(format!("part-{i}.parquet")))
            .collect();
        for (part, row) in parts.iter().zip(rows()) {
            let mut w = PartWriter::create(part, FileFormat::Parquet, &schema()).unwrap();
            w.write(part, &schema(), &[row]).unwrap();
            w.finish(part).unwrap();
        }
        let target = dir.path().join("all.parquet");
        join(&parts, &target, FileFormat::Parquet, &schema()).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&target).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(total, 2);
        let names: Vec<String> = batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["time", "host", "v", "n"]);
    }

    #[test]
    fn formats_parse() {
        assert_eq!(FileFormat::parse("json").unwrap(), FileFormat::Ndjson);
        let e = FileFormat::parse("xml").unwrap_err().to_string();
        assert!(e.contains("\"xml\""), "{e}");
    }
}
