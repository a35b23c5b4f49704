//! Browsing a connection's data (the seed's `/datasets/list/`, `/datasets/detail/`,
//! `/datasets/time-range/` and `/data/query-by-time/` with `connection_id=`): which
//! datasets it has, their columns and time range, and their rows by time, a page at a
//! time.

use std::sync::Arc;
use std::time::Duration;

use datanexus_store::Store;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::files::{format_time, row_json};
use crate::source::{self, ColumnKind, DatasetRef, Role, Row};
use crate::{ConnectionSpec, DbType, Error, Result};

/// Rows a page of `query_by_time` holds at most.
pub const MAX_PAGE: usize = 10_000;

/// The largest `offset` of `query_by_time` (the rows before it are read and skipped).
pub const MAX_OFFSET: usize = 1_000_000;

/// The datasets of a connection that can be exported, sorted: PostgreSQL tables and
/// views with a timestamp column (`schema.table`, quoted where needed; `public.` left
/// out), the InfluxDB database's measurements, the own store's measurements.
///
/// # Errors
/// As [`source::open`].
pub async fn datasets(
    spec: &ConnectionSpec,
    database: Option<&str>,
    store: Option<Arc<dyn Store>>,
    timeout: Duration,
) -> Result<Vec<String>> {
    let mut names = match spec.db_type {
        DbType::Postgres => source::postgres_tables(spec, database, timeout).await?,
        DbType::Influx => source::influx_measurements(spec, database).await?,
        DbType::Datanexus => source::own_store(store)?
            .datasets()
            .await?
            .into_iter()
            .map(|d| d.measurement)
            .collect(),
    };
    names.sort();
    names.dedup();
    Ok(names)
}

/// A column as `/datasets/detail/` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    /// Its name.
    pub name: String,
    /// `bool`, `int`, `float` or `text`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `tag` (part of the record key) or `field`.
    pub role: &'static str,
}

/// A dataset of a connection: its columns and time range.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetDetail {
    /// The table or measurement.
    pub name: String,
    /// The time column.
    pub time_column: String,
    /// The other columns, in row order.
    pub columns: Vec<ColumnInfo>,
    /// The first row's time (RFC 3339 UTC); `null` when empty.
    pub first: Option<String>,
    /// The last row's time.
    pub last: Option<String>,
}

/// The columns and time range of `dataset`.
///
/// # Errors
/// As [`source::open`].
pub async fn detail(
    spec: &ConnectionSpec,
    dataset: &DatasetRef,
    store: Option<Arc<dyn Store>>,
    timeout: Duration,
) -> Result<DatasetDetail> {
    let source = source::open(spec, dataset, store, timeout).await?;
    let schema = source.schema().await?;
    let range = source.time_range().await?;
    Ok(DatasetDetail {
        name: dataset.table.clone(),
        time_column: schema.time_column.clone(),
        columns: schema
            .columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.clone(),
                kind: match c.kind {
                    ColumnKind::Bool => "bool",
                    ColumnKind::Int => "int",
                    ColumnKind::Float => "float",
                    ColumnKind::Text => "text",
                },
                role: match c.role {
                    Role::Tag => "tag",
                    Role::Field => "field",
                },
            })
            .collect(),
        first: range.map(|(lo, _)| format_time(lo)),
        last: range.map(|(_, hi)| format_time(hi)),
    })
}

/// One page of rows.
#[derive(Debug, Clone, Serialize)]
pub struct RowsPage {
    /// The table or measurement.
    pub name: String,
    /// The rows in time order, as JSON objects (the time column first).
    pub rows: Vec<serde_json::Value>,
    /// How many rows the page has.
    pub count: usize,
    /// The `offset` of the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

/// Rows of `dataset` with `start_ns <= time <= end_ns` (absent: the dataset's first or
/// last row), skipping `offset` of them, at most `limit` (1 to [`MAX_PAGE`]).
///
/// # Errors
/// As [`source::open`]; [`Error::Invalid`] for a bad range or limit.
pub async fn query_by_time(
    spec: &ConnectionSpec,
    dataset: &DatasetRef,
    range: (Option<i64>, Option<i64>),
    offset: usize,
    limit: usize,
    store: Option<Arc<dyn Store>>,
    timeout: Duration,
) -> Result<RowsPage> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::Invalid(format!(
            "limit {limit}: expected 1 to {MAX_PAGE}"
        )));
    }
    if offset > MAX_OFFSET {
        return Err(Error::Invalid(format!(
            "offset {offset}: at most {MAX_OFFSET} (narrow start and end to go further)"
        )));
    }
    let source = source::open(spec, dataset, store, timeout).await?;
    let schema = source.schema().await?;
    let known = if range.0.is_none() || range.1.is_none() {
        source.time_range().await?
    } else {
        None
    };
    let (Some(lo), Some(hi)) = (
        range.0.or(known.map(|k| k.0)),
        range.1.or(known.map(|k| k.1)),
    ) else {
        return Ok(RowsPage {
            name: dataset.table.clone(),
            rows: Vec::new(),
            count: 0,
            next_offset: None,
        });
    };
    if lo > hi {
        return Err(Error::Invalid(format!(
            "start ({}) is after end ({})",
            format_time(lo),
            format_time(hi)
        )));
    }
    // One row past the page says whether there is a next one; the reader stops when
    // the collector has enough and drops its end of the channel.
    let wanted = offset.saturating_add(limit).saturating_add(1);
    let (tx, mut rx) = mpsc::channel::<Vec<Row>>(1);
    let read = async move {
        let read = source.read(&schema, lo, hi.saturating_add(1), &tx).await;
        drop(tx);
        read.map(|_| schema)
    };
    let collect = async move {
        let mut rows: Vec<Row> = Vec::new();
        while let Some(page) = rx.recv().await {
            rows.extend(page);
            if rows.len() >= wanted {
                break;
            }
        }
        rows
    };
    let (schema, rows) = tokio::join!(read, collect);
    let schema = schema?;
    let more = rows.len() >= wanted;
    let page: Vec<serde_json::Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|row| row_json(&schema, row))
        .collect();
    Ok(RowsPage {
        name: dataset.table.clone(),
        count: page.len(),
        next_offset: more.then_some(offset + limit),
        rows: page,
    })
}
