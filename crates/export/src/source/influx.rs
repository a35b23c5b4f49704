//! An InfluxDB 1.x measurement as a source: tags and fields from `SHOW TAG KEYS` and
//! `SHOW FIELD KEYS`, rows from a chunked `SELECT *` by time range (nanosecond
//! epochs), streamed a chunk at a time.

use async_trait::async_trait;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::Visitor;
use serde_json::Value as Json;
use std::borrow::Cow;
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
        let doc: Answer<'_> = serde_json::from_slice(text).map_err(|e| {
            Error::Unreachable(format!("{}: not an InfluxDB answer: {e}", self.name()))
        })?;
        let result = doc.results.into_iter().next();
        if let Some(error) = doc
            .error
            .or_else(|| result.as_ref().and_then(|r| r.error.clone()))
        {
            return Err(Error::Unreachable(format!("{}: {error}", self.name())));
        }
        let series_list = result.map(|r| r.series).unwrap_or_default();
        let mut rows = Vec::with_capacity(series_list.iter().map(|s| s.values.len()).sum());
        for series in series_list {
            // Where each answer column goes: None = time, Some(i) = schema column i.
            let place: Vec<Option<Option<usize>>> = series
                .columns
                .iter()
                .map(|name| {
                    if name == "time" {
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
            for values in series.values {
                let mut row = Row {
                    time_ns: 0,
                    values: vec![Value::Null; schema.columns.len()],
                };
                for (value, place) in values.into_iter().zip(&place) {
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

/// One document of a chunked answer: `{"results": [{"series": [...]}]}` or an error.
/// Parsed straight into these (cells borrowed from the answer where they have no
/// escapes), not through a generic JSON tree: this is the hot loop of an export.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(default, borrow)]
    results: Vec<StatementAnswer<'a>>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct StatementAnswer<'a> {
    #[serde(default, borrow)]
    series: Vec<SeriesAnswer<'a>>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct SeriesAnswer<'a> {
    #[serde(default, borrow)]
    columns: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    values: Vec<Vec<Cell<'a>>>,
}

/// One cell of an answer row: InfluxDB answers scalars only.
#[derive(Debug, PartialEq)]
enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(Cow<'a, str>),
}

impl Cell<'_> {
    fn as_i64(&self) -> Option<i64> {
        match *self {
            Cell::Int(i) => Some(i),
            Cell::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Cell::Int(i) => Some(i as f64),
            Cell::UInt(u) => Some(u as f64),
            Cell::Float(f) => Some(f),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Cell<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct CellVisitor;
        impl<'de> Visitor<'de> for CellVisitor {
            type Value = Cell<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, string, boolean or null")
            }
            fn visit_unit<E>(self) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Null)
            }
            fn visit_none<E>(self) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Null)
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Cell<'de>, E> {
                Ok(i64::try_from(v).map_or(Cell::UInt(v), Cell::Int))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Cell<'de>, E> {
                Ok(Cell::Text(Cow::Owned(v)))
            }
        }
        d.deserialize_any(CellVisitor)
    }
}

/// A cell of an answer as a value of a `kind` column.
fn convert(kind: ColumnKind, v: Cell<'_>) -> Value {
    match (kind, v) {
        (_, Cell::Null) => Value::Null,
        (ColumnKind::Int, Cell::Float(f)) => Value::Int(f as i64),
        (ColumnKind::Int, Cell::UInt(u)) => Value::Int(i64::try_from(u).unwrap_or(i64::MAX)),
        (ColumnKind::Int, v) => v.as_i64().map_or(Value::Null, Value::Int),
        (ColumnKind::Float, v) => v.as_f64().map_or(Value::Null, Value::Float),
        (ColumnKind::Bool, Cell::Bool(b)) => Value::Bool(b),
        (ColumnKind::Bool, _) => Value::Null,
        (ColumnKind::Text, Cell::Text(s)) => Value::Text(s.into_owned()),
        (ColumnKind::Text, Cell::Bool(b)) => Value::Text(b.to_string()),
        (ColumnKind::Text, Cell::Int(i)) => Value::Text(i.to_string()),
        (ColumnKind::Text, Cell::UInt(u)) => Value::Text(u.to_string()),
        // As JSON writes it (`1.0`, `1e300`), as before.
        (ColumnKind::Text, Cell::Float(f)) => Value::Text(
            serde_json::Number::from_f64(f).map_or_else(|| f.to_string(), |n| n.to_string()),
        ),
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

    #[test]
    fn answers_parse_into_cells() {
        let text = br#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["time","host","n","usage","ok"],"values":[[1,"a\"b",2,0.5,true],[18446744073709551615,null,-3,1e300,false]],"partial":true}],"partial":true}]}"#;
        let doc: Answer<'_> = serde_json::from_slice(text).unwrap();
        let series = &doc.results[0].series[0];
        assert_eq!(series.columns, ["time", "host", "n", "usage", "ok"]);
        assert_eq!(
            series.values[0],
            [
                Cell::Int(1),
                Cell::Text("a\"b".into()),
                Cell::Int(2),
                Cell::Float(0.5),
                Cell::Bool(true)
            ]
        );
        assert_eq!(series.values[1][0], Cell::UInt(u64::MAX));
        assert_eq!(series.values[1][0].as_i64(), None);
        assert_eq!(convert(ColumnKind::Int, Cell::Float(2.7)), Value::Int(2));
        assert_eq!(
            convert(ColumnKind::Float, Cell::Int(-3)),
            Value::Float(-3.0)
        );
        assert_eq!(
            convert(ColumnKind::Text, Cell::Float(1.0)),
            Value::Text("1.0".into())
        );
        assert_eq!(convert(ColumnKind::Bool, Cell::Int(1)), Value::Null);
        let error: Answer<'_> =
            serde_json::from_slice(br#"{"results":[{"statement_id":0,"error":"boom"}]}"#).unwrap();
        assert_eq!(error.results[0].error.as_deref(), Some("boom"));
        assert!(
            serde_json::from_slice::<Answer<'_>>(
                br#"{"results":[{"series":[{"values":[[{}]]}]}]}"#
            )
            .is_err()
        );
    }
}
