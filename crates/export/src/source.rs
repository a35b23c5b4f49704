//! What an export reads: a dataset of a connection (a PostgreSQL table, an InfluxDB
//! measurement, a measurement of the own store) as rows of a fixed schema, read by time
//! range in time order.
//!
//! # Layout
//! - `postgres.rs`: a table with a `timestamp`/`timestamptz` column, read through a
//!   portal in pages; identifiers are looked up in the catalog and quoted, values are
//!   parameters (the seed interpolated strings into its queries).
//! - `influx.rs`: an InfluxDB 1.x measurement (`SHOW TAG KEYS`, `SHOW FIELD KEYS`,
//!   chunked `SELECT`).
//! - `store.rs`: a measurement of this server's store, one row per sample.

mod influx;
#[cfg(feature = "postgres")]
mod postgres;
mod store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datanexus_store::Store;
use tokio::sync::mpsc;

use crate::{ConnectionSpec, DbType, Error, Result};

/// Rows a source hands over at once.
pub(crate) const PAGE_ROWS: usize = 10_000;

/// How a column's values are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ColumnKind {
    /// `true` / `false`.
    Bool,
    /// A 64-bit integer.
    Int,
    /// A 64-bit float.
    Float,
    /// Text (also JSON and every type without a better match, as its text form).
    Text,
}

/// What a column is to the export: tags make the record key (per-key order holds);
/// fields are the measured values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Identifies the series or source (InfluxDB tags, labels, PostgreSQL text columns).
    Tag,
    /// A value.
    Field,
}

/// One column besides the time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: ColumnKind,
    /// Tag or field.
    pub role: Role,
}

/// The columns of a dataset's rows: the time (nanoseconds since the epoch, UTC), then
/// `columns`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    /// The dataset's name (table or measurement).
    pub dataset: String,
    /// The name of the time column.
    pub time_column: String,
    /// The other columns, in the order of [`Row::values`].
    pub columns: Vec<Column>,
}

/// A value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
}

/// One row: its time and one value per column of the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Nanoseconds since the Unix epoch, UTC.
    pub time_ns: i64,
    /// One value per [`Schema::columns`].
    pub values: Vec<Value>,
}

impl Row {
    /// The record key: the tag values joined by `,` (the dataset name when there is
    /// no tag), so that one series' or source's rows share a Kafka partition.
    pub fn key(&self, schema: &Schema) -> String {
        let mut key = String::new();
        for (column, value) in schema.columns.iter().zip(&self.values) {
            if column.role != Role::Tag {
                continue;
            }
            if !key.is_empty() {
                key.push(',');
            }
            match value {
                Value::Text(s) => key.push_str(s),
                Value::Int(i) => key.push_str(&i.to_string()),
                Value::Float(f) => key.push_str(&f.to_string()),
                Value::Bool(b) => key.push_str(if *b { "true" } else { "false" }),
                Value::Null => {}
            }
        }
        if key.is_empty() {
            schema.dataset.clone()
        } else {
            key
        }
    }
}

/// Which dataset of a connection to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRef {
    /// The table (PostgreSQL, optionally `schema.table`) or measurement.
    pub table: String,
    /// The database (InfluxDB; PostgreSQL: over the connection's); `None` = the
    /// connection's.
    pub database: Option<String>,
    /// PostgreSQL: the time column (default: the table's only `timestamp`/`timestamptz`
    /// column, or the one named `time`).
    pub time_column: Option<String>,
}

/// A dataset that can be read by time range.
#[async_trait]
pub trait Source: Send + Sync {
    /// How the dataset is named in messages (`postgresql at h:5432/db, table t`).
    fn name(&self) -> String;

    /// The rows' columns.
    async fn schema(&self) -> Result<Schema>;

    /// The first and last time of the dataset's rows; `None` when it has none.
    async fn time_range(&self) -> Result<Option<(i64, i64)>>;

    /// Sends the rows with `start_ns <= time < end_ns`, in time order, to `out` in
    /// pages of at most [`PAGE_ROWS`]; returns how many. Stops early (`Ok`) when `out`
    /// is closed.
    async fn read(
        &self,
        schema: &Schema,
        start_ns: i64,
        end_ns: i64,
        out: &mpsc::Sender<Vec<Row>>,
    ) -> Result<u64>;
}

/// Opens `dataset` of the connection `spec` (`store`: this server's own, for
/// `datanexus` connections).
///
/// # Errors
/// [`Error::Unreachable`] when the database cannot be reached, [`Error::NotFound`] /
/// [`Error::Invalid`] when the dataset does not exist or cannot be exported.
pub async fn open(
    spec: &ConnectionSpec,
    dataset: &DatasetRef,
    store: Option<Arc<dyn Store>>,
    timeout: Duration,
) -> Result<Arc<dyn Source>> {
    match spec.db_type {
        DbType::Postgres => open_postgres(spec, dataset, timeout).await,
        DbType::Influx => Ok(Arc::new(influx::InfluxSource::new(spec, dataset)?)),
        DbType::Datanexus => Ok(Arc::new(store::StoreSource::new(
            own_store(store)?,
            dataset,
        ))),
    }
}

/// The own store of `datanexus` connections.
pub(crate) fn own_store(store: Option<Arc<dyn Store>>) -> Result<Arc<dyn Store>> {
    store.ok_or_else(|| {
        Error::Unreachable(
            "this process has no store (role gateway or processor): use datanexus \
             connections on the process with role store or all"
                .to_owned(),
        )
    })
}

/// The measurements of an InfluxDB database (`database`, else the connection's).
pub(crate) async fn influx_measurements(
    spec: &ConnectionSpec,
    database: Option<&str>,
) -> Result<Vec<String>> {
    influx::measurements(spec, database).await
}

/// The tables and views of a PostgreSQL database with a timestamp column.
#[cfg(feature = "postgres")]
pub(crate) async fn postgres_tables(
    spec: &ConnectionSpec,
    database: Option<&str>,
    timeout: Duration,
) -> Result<Vec<String>> {
    postgres::tables(spec, database, timeout).await
}

#[cfg(not(feature = "postgres"))]
pub(crate) async fn postgres_tables(
    _: &ConnectionSpec,
    _: Option<&str>,
    _: Duration,
) -> Result<Vec<String>> {
    Err(Error::Invalid(
        "this datanexus was built without the postgres feature".to_owned(),
    ))
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    spec: &ConnectionSpec,
    dataset: &DatasetRef,
    timeout: Duration,
) -> Result<Arc<dyn Source>> {
    Ok(Arc::new(
        postgres::PostgresSource::open(spec, dataset, timeout).await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &ConnectionSpec, _: &DatasetRef, _: Duration) -> Result<Arc<dyn Source>> {
    Err(Error::Invalid(
        "this datanexus was built without the postgres feature".to_owned(),
    ))
}
