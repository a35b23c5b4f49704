//! A measurement of this server's own store as a source: one row per sample, with the
//! series' labels, its field and its value. A range is read field by field, each in
//! (time, series) order, in pages.

use std::sync::Arc;

use async_trait::async_trait;
use datanexus_store::{DatasetInfo, Selector, SeriesQuery, Store, TimeRange};
use tokio::sync::mpsc;

use super::{Column, ColumnKind, DatasetRef, PAGE_ROWS, Role, Row, Schema, Source, Value};
use crate::{Error, Result};

/// The names of the two columns after the labels.
const FIELD: &str = "field";
const VALUE: &str = "value";

/// A measurement of the own store.
pub(super) struct StoreSource {
    store: Arc<dyn Store>,
    measurement: String,
}

impl StoreSource {
    pub(super) fn new(store: Arc<dyn Store>, dataset: &DatasetRef) -> Self {
        StoreSource {
            store,
            measurement: dataset.table.clone(),
        }
    }

    async fn info(&self) -> Result<DatasetInfo> {
        self.store
            .datasets()
            .await?
            .into_iter()
            .find(|d| d.measurement == self.measurement)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "this server's store has no measurement {:?}",
                    self.measurement
                ))
            })
    }
}

#[async_trait]
impl Source for StoreSource {
    fn name(&self) -> String {
        format!(
            "this server's store ({}), measurement {}",
            self.store.name(),
            self.measurement
        )
    }

    async fn schema(&self) -> Result<Schema> {
        let info = self.info().await?;
        let mut columns: Vec<Column> = info
            .label_names
            .iter()
            .map(|name| Column {
                name: name.clone(),
                kind: ColumnKind::Text,
                role: Role::Tag,
            })
            .collect();
        for (name, kind, role) in [
            (FIELD, ColumnKind::Text, Role::Tag),
            (VALUE, ColumnKind::Float, Role::Field),
        ] {
            if columns.iter().any(|c| c.name == name) {
                return Err(Error::Invalid(format!(
                    "measurement {:?} has a label named {name:?}, which its export needs \
                     for its own column",
                    self.measurement
                )));
            }
            columns.push(Column {
                name: name.to_owned(),
                kind,
                role,
            });
        }
        Ok(Schema {
            dataset: self.measurement.clone(),
            time_column: "time".to_owned(),
            columns,
        })
    }

    async fn time_range(&self) -> Result<Option<(i64, i64)>> {
        let info = self.info().await?;
        Ok((info.sample_count > 0).then_some((info.first_ns, info.last_ns)))
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
        let info = self.info().await?;
        let labels = schema.columns.len() - 2;
        let mut n = 0u64;
        for field in &info.fields {
            let mut offset = 0;
            loop {
                let query = SeriesQuery {
                    selector: Selector {
                        measurement: self.measurement.clone(),
                        field: field.clone(),
                        matchers: Vec::new(),
                    },
                    range: TimeRange {
                        start_ns: Some(start_ns),
                        end_ns: Some(end_ns - 1),
                    },
                    limit: PAGE_ROWS,
                    offset,
                };
                let page = self.store.query(&query).await?;
                let got = page.samples.len();
                let rows: Vec<Row> = page
                    .samples
                    .iter()
                    .map(|(i, sample)| {
                        let mut values = vec![Value::Null; labels + 2];
                        if let Some(key) = page.series.get(*i) {
                            for (name, value) in key.labels.iter() {
                                if let Some(at) =
                                    schema.columns[..labels].iter().position(|c| c.name == name)
                                {
                                    values[at] = Value::Text(value.to_owned());
                                }
                            }
                        }
                        values[labels] = Value::Text(field.clone());
                        values[labels + 1] = Value::Float(sample.value);
                        Row {
                            time_ns: sample.timestamp_ns,
                            values,
                        }
                    })
                    .collect();
                n += got as u64;
                offset += got;
                if !rows.is_empty() && out.send(rows).await.is_err() {
                    return Ok(n);
                }
                if got < PAGE_ROWS {
                    break;
                }
            }
        }
        Ok(n)
    }
}
