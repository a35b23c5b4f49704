//! Parquet writer settings and statistics helpers shared by points, events and results
//! files.

use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Int32Array, StringArray};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;

/// How files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteOptions {
    /// Most rows per row group (the unit of statistics-based pruning).
    pub(crate) row_group_rows: usize,
    /// zstd level (1..=22).
    pub(crate) zstd_level: i32,
}

/// Per-column encodings of one file kind.
pub(crate) struct ColumnLayout<'a> {
    /// Written as `datanexus.format` key-value metadata.
    pub(crate) kind: &'a str,
    /// Dictionary-encoded columns (all others are not).
    pub(crate) dictionary: &'a [&'a str],
    /// DELTA_BINARY_PACKED columns.
    pub(crate) delta: &'a [&'a str],
    /// BYTE_STREAM_SPLIT columns.
    pub(crate) byte_stream_split: &'a [&'a str],
    /// Indices of the columns rows are sorted by (ascending).
    pub(crate) sorted_by: &'a [i32],
}

/// Writer properties for `layout`: zstd, chunk and page statistics, the encodings.
pub(crate) fn writer_props(opts: &WriteOptions, layout: &ColumnLayout<'_>) -> WriterProperties {
    let level = ZstdLevel::try_new(opts.zstd_level).unwrap_or_default();
    let sorting = layout
        .sorted_by
        .iter()
        .map(|&column_idx| SortingColumn {
            column_idx,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_dictionary_enabled(false)
        .set_sorting_columns(Some(sorting))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "datanexus.format".into(),
            layout.kind.to_owned(),
        )]));
    for c in layout.dictionary {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*c), true);
    }
    for c in layout.delta {
        b = b.set_column_encoding(ColumnPath::from(*c), Encoding::DELTA_BINARY_PACKED);
    }
    for c in layout.byte_stream_split {
        b = b.set_column_encoding(ColumnPath::from(*c), Encoding::BYTE_STREAM_SPLIT);
    }
    b.build()
}

/// A `Dictionary(Int32, Utf8)` array from keys and distinct values.
///
/// # Errors
/// When a key is out of range.
pub(crate) fn dict_array(
    keys: Vec<i32>,
    values: Vec<String>,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let d = DictionaryArray::<Int32Type>::try_new(
        Int32Array::from(keys),
        Arc::new(StringArray::from(values)),
    )?;
    Ok(Arc::new(d))
}

/// Min and max of an INT64 column chunk (bit patterns for UINT64, whose statistics
/// parquet orders as unsigned).
pub(crate) fn i64_stats(s: &Statistics) -> Option<(i64, i64)> {
    match s {
        Statistics::Int64(v) => Some((*v.min_opt()?, *v.max_opt()?)),
        _ => None,
    }
}

/// Min and max of a string column chunk.
pub(crate) fn bytes_stats(s: &Statistics) -> Option<(&[u8], &[u8])> {
    match s {
        Statistics::ByteArray(v) => Some((v.min_opt()?.data(), v.max_opt()?.data())),
        _ => None,
    }
}
