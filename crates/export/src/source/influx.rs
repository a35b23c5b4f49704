//! An InfluxDB 1.x measurement as a source: tags and fields from `SHOW TAG KEYS` and
//! `SHOW FIELD KEYS`, rows from a chunked `SELECT *` by time range (nanosecond
//! epochs), streamed a chunk at a time.

use async_trait::async_trait;
use http_body_util::BodyExt;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use super::{Column, ColumnKind, DatasetRef, PAGE_ROWS, Role, Row, Schema, Source, Value};
use crate::influx::Influx;
use crate::{ConnectionSpec, Error, Result};

/// A measurement of an InfluxDB database.
pub(super) struct InfluxSource {
    influx: Influx,
    db: String,
    measurement: String,
}

/// The database read: `database`, else the connection's.
fn database_of(spec: &ConnectionSpec, database: Option<&str>) -> Result<String> {
    database
        .map(str::to_owned)
        .or_else(|| spec.database.clone())
        .ok_or_else(|| {
            Error::Invalid(
                "InfluxDB needs a database: give database= or register the connection \
                 with one"
                    .to_owned(),
            )
        })
}

/// The measurements of the database (`SHOW MEASUREMENTS`).
pub(super) async fn measurements(
    spec: &ConnectionSpec,
    database: Option<&str>,
) -> Result<Vec<String>> {
    let db = database_of(spec, database)?;
    let v = Influx::new(spec)?
        .query("SHOW MEASUREMENTS", Some(&db))
        .await?;
    Ok(InfluxSource::rows(&v)
        .iter()
        .filter_map(|r| r.first().and_then(Json::as_str).map(str::to_owned))
        .collect())
}

impl InfluxSource {
    pub(super) fn new(spec: &ConnectionSpec, dataset: &DatasetRef) -> Result<Self> {
        let db = database_of(spec, dataset.database.as_deref())?;
        Ok(InfluxSource {
            influx: Influx::new(spec)?,
            db,
            measurement: dataset.table.clone(),
        })
    }

    fn from(&self) -> String {
        quote(&self.measurement)
    }

    /// The first value of every row of the first series of `SHOW …` answer `v`.
    fn rows(v: &Json) -> Vec<Vec<Json>> {
        v["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r.as_array().cloned()).collect())
            .unwrap_or_default()
    }

    /// The time of the first row of `SELECT * … ORDER BY time <order> LIMIT 1`.
    async fn edge(&self, order: &str) -> Result<Option<i64>> {
        let q = format!(
            "SELECT * FROM {} ORDER BY time {order} LIMIT 1",
            self.from()
        );
        let v = self.influx.query(&q, Some(&self.db)).await?;
        Ok(Self::rows(&v)
            .first()
            .and_then(|r| r.first())
            .and_then(Json::as_i64))
    }
}

/// An InfluxQL identifier, quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

#[async_trait]
impl Source for InfluxSource {
    fn name(&self) -> String {
        format!(
            "{}, database {}, measurement {}",
            self.influx.name(),
            self.db,
            self.measurement
        )
    }

    async fn schema(&self) -> Result<Schema> {
        let tags = self
            .influx
            .query(
                &format!("SHOW TAG KEYS FROM {}", self.from()),
                Some(&self.db),
            )
            .await?;
        let fields = self
            .influx
            .query(
                &format!("SHOW FIELD KEYS FROM {}", self.from()),
                Some(&self.db),
            )
            .await?;
        let mut columns: Vec<Column> = Self::rows(&tags)
            .iter()
            .filter_map(|r| r.first().and_then(Json::as_str))
            .map(|name| Column {
                name: name.to_owned(),
                kind: ColumnKind::Text,
                role: Role::Tag,
            })
            .collect();
        for r in Self::rows(&fields) {
            let (Some(name), Some(ty)) = (
                r.first().and_then(Json::as_str),
                r.get(1).and_then(Json::as_str),
            ) else {
                continue;
            };
            let kind = match ty {
                "float" => ColumnKind::Float,
                "integer" | "unsigned" => ColumnKind::Int,
                "boolean" => ColumnKind::Bool,
                _ => ColumnKind::Text,
            };
            columns.push(Column {
                name: name.to_owned(),
                kind,
                role: Role::Field,
            });
        }
        if columns.is_empty() {
            return Err(Error::NotFound(format!(
                "{}, database {}: no measurement {:?}",
                self.influx.name(),
                self.db,
                self.measurement
            )));
        }
        Ok(Schema {
            dataset: self.measurement.clone(),
            time_column: "time".to_owned(),
            columns,
        })
    }

    async fn time_range(&self) -> Result<Option<(i64, i64)>> {
        let first = self.edge("ASC").await?;
        let last = self.edge("DESC").await?;
        Ok(first.zip(last))
    }

    async fn read(
        &self,
        schema: &Schema,
        start_ns: i64,
        end_ns: i64,
        out: &mpsc::Sender<Vec<Row>>,
    ) -> Result<u64> {
        if end_ns <= start_ns {
            return Ok(0);
        }
        let q = format!(
            "SELECT * FROM {} WHERE time >= {start_ns} AND time < {end_ns}",
            self.from()
        );
        let mut body = self.influx.query_chunked(&q, &self.db, PAGE_ROWS).await?;
        let mut pending: Vec<u8> = Vec::new();
        // `pending[..scanned]` holds no newline.
        let mut scanned = 0;
        let mut n = 0u64;
        loop {
            let frame = body.frame().await;
            let done = frame.is_none();
            if let Some(frame) = frame {
                let frame = frame.map_err(|e| {
                    Error::Unreachable(format!("{}: reading the answer: {e}", self.name()))
                })?;
                if let Ok(data) = frame.into_data() {
                    pending.extend_from_slice(&data);
                }
            }
            // Every complete line is one JSON document (the last may lack its newline).
            // Only the bytes that arrived are searched, and the documents handled are
            // dropped from the buffer once per frame.
            let mut start = 0;
            while let Some(at) = pending[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + at;
                n += self
                    .send_document(schema, &pending[start..end], out)
                    .await?;
                if out.is_closed() {
                    return Ok(n);
                }
                start = end + 1;
                scanned = start;
            }
            pending.drain(..start);
            scanned = pending.len();
            if done {
                if !pending.iter().all(u8::is_ascii_whitespace) {
                    n += self.send_document(schema, &pending, out).await?;
                }
                return Ok(n);
            }
        }
    }
}

impl InfluxSource {
    /// Converts one document of a chunked answer and sends its rows.
    async fn send_document(
        &self,
        schema: &Schema,
        text: &[u8],
        out: &mpsc::Sender<Vec<Row>>,
    ) -> Result<u64> {
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(0);
        }
        let doc: Json = serde_json::from_slice(text).map_err(|e| {
            Error::Unreachable(format!("{}: not an InfluxDB answer: {e}", self.name()))
        })?;
        let result = &doc["results"][0];
        if let Some(error) = doc["error"].as_str().or_else(|| result["error"].as_str()) {
            return Err(Error::Unreachable(format!("{}: {error}", self.name())));
        }
        let series_list = result["series"].as_array();
        let mut rows = Vec::with_capacity(
            series_list
                .into_iter()
                .flatten()
                .map(|s| s["values"].as_array().map_or(0, Vec::len))
                .sum(),
        );
        for series in series_list.into_iter().flatten() {
            let names: Vec<&str> = series["columns"]
                .as_array()
                .map(|c| c.iter().map(|v| v.as_str().unwrap_or_default()).collect())
                .unwrap_or_default();
            // Where each answer column goes: None = time, Some(i) = schema column i.
            let place: Vec<Option<Option<usize>>> = names
                .iter()
                .map(|name| {
                    if *name == "time" {
                        Some(None)
                    } else {
                        schema
                            .columns
                            .iter()
                            .position(|c| c.name == *name)
                            .map(Some)
                    }
                })
                .collect();
            for values in series["values"].as_array().into_iter().flatten() {
                let Some(values) = values.as_array() else {
                    continue;
                };
                let mut row = Row {
                    time_ns: 0,
                    values: vec![Value::Null; schema.columns.len()],
                };
                for (value, place) in values.iter().zip(&place) {
                    match place {
                        Some(None) => row.time_ns = value.as_i64().unwrap_or(0),
                        Some(Some(i)) => row.values[*i] = convert(schema.columns[*i].kind, value),
                        None => {}
                    }
                }
                rows.push(row);
            }
        }
        let n = rows.len() as u64;
        if !rows.is_empty() {
            // A closed channel means the reader stopped: not an error here.
            let _ = out.send(rows).await;
        }
        Ok(n)
    }
}

/// A JSON value of an answer as a value of a `kind` column.
fn convert(kind: ColumnKind, v: &Json) -> Value {
    match (kind, v) {
        (_, Json::Null) => Value::Null,
        (ColumnKind::Int, v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map_or(Value::Null, Value::Int),
        (ColumnKind::Float, v) => v.as_f64().map_or(Value::Null, Value::Float),
        (ColumnKind::Bool, v) => v.as_bool().map_or(Value::Null, Value::Bool),
        (ColumnKind::Text, Json::String(s)) => Value::Text(s.clone()),
        (ColumnKind::Text, other) => Value::Text(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("cpu"), "\"cpu\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
