//! Datasets (the large-dataset-delivery seed's paths; with or without the trailing
//! slash): one dataset per measurement.
//!
//! - `GET /datasets/list/` → `{"datasets": [dataset, …]}`, sorted by name.
//! - `GET /datasets/detail/?name=X` → the dataset (`404` when unknown).
//! - `GET /datasets/time-range/?name=X` → `{"name", "first", "last"}`.
//!
//! A dataset is `{"name", "type", "help", "fields", "labels", "series", "samples",
//! "first", "last"}`: metric type, help text (or `null`), sorted field and label names,
//! series and sample counts, and the first and last sample times (RFC 3339 UTC).

use axum::Json;
use axum::extract::State;
use datanexus_model::time;
use datanexus_store::DatasetInfo;
use serde_json::{Value, json};

use crate::http::params::Params;
use crate::{AppState, Error, Result};

/// Handles `GET /datasets/list/`.
pub(crate) async fn list(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    params?.finish()?;
    let datasets: Vec<Value> = state
        .store()?
        .datasets()
        .await?
        .iter()
        .map(dataset_json)
        .collect();
    Ok(Json(json!({ "datasets": datasets })))
}

/// Handles `GET /datasets/detail/`.
pub(crate) async fn detail(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    let info = find(&state, params?).await?;
    Ok(Json(dataset_json(&info)))
}

/// Handles `GET /datasets/time-range/`.
pub(crate) async fn time_range(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    let info = find(&state, params?).await?;
    Ok(Json(json!({
        "name": info.measurement,
        "first": time::format_rfc3339(info.first_ns),
        "last": time::format_rfc3339(info.last_ns),
    })))
}

/// The dataset named by the `name` parameter.
async fn find(state: &AppState, mut params: Params) -> Result<DatasetInfo> {
    let name = params
        .string("name")?
        .ok_or_else(|| Error::Invalid("missing parameter name (the dataset's name)".into()))?;
    params.finish()?;
    state
        .store()?
        .datasets()
        .await?
        .into_iter()
        .find(|d| d.measurement == name)
        .ok_or_else(|| Error::NotFound(format!("unknown dataset {name:?}")))
}

fn dataset_json(d: &DatasetInfo) -> Value {
    json!({
        "name": d.measurement,
        "type": d.kind.as_str(),
        "help": d.help,
        "fields": d.fields,
        "labels": d.label_names,
        "series": d.series_count,
        "samples": d.sample_count,
        "first": time::format_rfc3339(d.first_ns),
        "last": time::format_rfc3339(d.last_ns),
    })
}

#[cfg(test)]
mod tests {
    use datanexus_model::MetricType;

    use super::*;

    #[test]
    fn datasets_are_rendered_with_counts_and_rfc3339_times() {
        let info = DatasetInfo {
            measurement: "cpu".into(),
            kind: MetricType::Gauge,
            help: None,
            fields: vec!["value".into()],
            label_names: vec!["host".into()],
            series_count: 2,
            sample_count: 10,
            first_ns: 0,
            last_ns: 60_000_000_000,
        };
        assert_eq!(
            dataset_json(&info),
            json!({"name": "cpu", "type": "gauge", "help": null, "fields": ["value"],
                   "labels": ["host"], "series": 2, "samples": 10,
                   "first": "1970-01-01T00:00:00Z", "last": "1970-01-01T00:01:00Z"})
        );
    }
}
