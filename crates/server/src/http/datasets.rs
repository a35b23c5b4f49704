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
//!
//! With `connection_id=` (and optionally `database=`; a token with the scope `admin`,
//! as the connection's other endpoints) they browse a registered connection instead:
//! `list` → `{"connection_id", "datasets": [name, …]}`; `detail` (`name=` or the
//! seed's `table=`/`collection=`, `time_column=`) → `{"name", "time_column",
//! "columns": [{"name", "type", "role"}], "first", "last"}`; `time-range` → `{"name",
//! "first", "last"}`. `GET /data/query-by-time/` pages a connection's rows by time.

use axum::extract::State;
use axum::{Extension, Json};
use datanexus_config::Scope;
use datanexus_export::{ConnectionSpec, DatasetRef, browse};
use datanexus_model::time;
use datanexus_store::DatasetInfo;
use serde_json::{Value, json};

use crate::auth::Granted;
use crate::http::params::Params;
use crate::{AppState, Error, Result};

/// The registered connection named by `connection_id=`, if any; browsing one needs the
/// scope `admin`.
async fn connection(
    state: &AppState,
    granted: Option<Extension<Granted>>,
    params: &mut Params,
) -> Result<Option<ConnectionSpec>> {
    let Some(id) = params.string("connection_id")? else {
        return Ok(None);
    };
    granted
        .map_or(Granted::NONE, |g| g.0)
        .require(Scope::Admin)?;
    Ok(Some(state.connections().get(&id).await?))
}

/// The dataset of a connection named by `name=` (or `table=`, `collection=`).
fn dataset_of(params: &mut Params) -> Result<DatasetRef> {
    let mut table = None;
    for key in ["name", "table", "collection"] {
        if let Some(v) = params.string(key)? {
            table.get_or_insert(v);
        }
    }
    let table = table.filter(|t| !t.is_empty()).ok_or_else(|| {
        Error::Invalid("missing parameter name (the dataset's name; also table=)".into())
    })?;
    Ok(DatasetRef {
        table,
        database: params
            .string("database")?
            .or(params.string("mongo_database")?)
            .filter(|d| !d.is_empty()),
        time_column: params
            .string("time_column")?
            .or(params.string("time_field")?)
            .filter(|c| !c.is_empty()),
    })
}

/// Handles `GET /datasets/list/`.
pub(crate) async fn list(
    State(state): State<AppState>,
    granted: Option<Extension<Granted>>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    let mut params = params?;
    if let Some(spec) = connection(&state, granted, &mut params).await? {
        let database = params.string("database")?.filter(|d| !d.is_empty());
        params.finish()?;
        let (store, timeout) = state.exports().browse_context();
        let names = browse::datasets(&spec, database.as_deref(), store, timeout).await?;
        return Ok(Json(
            json!({ "connection_id": spec.connection_id, "datasets": names }),
        ));
    }
    params.finish()?;
    let datasets: Vec<Value> = state
        .store()?
        .datasets()
        .await?
        .iter()
        .map(dataset_json)
        .collect();
    Ok(Json(json!({ "datasets": datasets })))
}

/// The detail of a connection's dataset named by the parameters.
async fn connection_detail(
    state: &AppState,
    spec: &ConnectionSpec,
    mut params: Params,
) -> Result<browse::DatasetDetail> {
    let dataset = dataset_of(&mut params)?;
    params.finish()?;
    let (store, timeout) = state.exports().browse_context();
    Ok(browse::detail(spec, &dataset, store, timeout).await?)
}

/// Handles `GET /datasets/detail/`.
pub(crate) async fn detail(
    State(state): State<AppState>,
    granted: Option<Extension<Granted>>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    let mut params = params?;
    if let Some(spec) = connection(&state, granted, &mut params).await? {
        let detail = connection_detail(&state, &spec, params).await?;
        return Ok(Json(json!(detail)));
    }
    let info = find(&state, params).await?;
    Ok(Json(dataset_json(&info)))
}

/// Handles `GET /datasets/time-range/`.
pub(crate) async fn time_range(
    State(state): State<AppState>,
    granted: Option<Extension<Granted>>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    let mut params = params?;
    if let Some(spec) = connection(&state, granted, &mut params).await? {
        let d = connection_detail(&state, &spec, params).await?;
        return Ok(Json(
            json!({ "name": d.name, "first": d.first, "last": d.last }),
        ));
    }
    let info = find(&state, params).await?;
    Ok(Json(json!({
        "name": info.measurement,
        "first": time::format_rfc3339(info.first_ns),
        "last": time::format_rfc3339(info.last_ns),
    })))
}

/// Handles `GET /data/query-by-time/`: `connection_id=` and the dataset as for
/// `detail`, optional `start`/`end` (both included; absent: the dataset's first/last
/// row), `limit` (1 to 10,000, default 1,000) and `offset` → `{"name", "rows",
/// "count", "next_offset"}`.
pub(crate) async fn query_by_time(
    State(state): State<AppState>,
    granted: Option<Extension<Granted>>,
    params: Result<Params>,
) -> Result<Json<browse::RowsPage>> {
    let mut params = params?;
    let spec = connection(&state, granted, &mut params)
        .await?
        .ok_or_else(|| Error::Invalid("missing parameter connection_id".into()))?;
    let dataset = dataset_of(&mut params)?;
    let range = params.range("start", "end")?;
    let limit = params.count("limit", 1_000, browse::MAX_PAGE)?;
    // Rows before the offset are read and skipped: narrow start/end to go further.
    let offset = params.count("offset", 0, browse::MAX_OFFSET)?;
    params.finish()?;
    let (store, timeout) = state.exports().browse_context();
    let page = browse::query_by_time(
        &spec,
        &dataset,
        (range.start_ns, range.end_ns),
        offset,
        limit,
        store,
        timeout,
    )
    .await?;
    Ok(Json(page))
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
