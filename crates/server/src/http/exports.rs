//! Export jobs, scope `admin`:
//!
//! - `POST /exports` with `{"connection_id", "table", "database", "time_column",
//!   "start", "end", "format"}` → `202` and the job's status. To a file: `format` is
//!   `ndjson` | `csv` | `parquet`; to Kafka: `kafka_brokers` and `send_topic` (the
//!   seed's names), `format` `json` (default) | `protobuf`. `start`/`end`: RFC 3339 or
//!   Unix seconds, both included; absent = the dataset's first/last row. `400` for a
//!   bad request, `404` for an unknown connection, dataset or topic, `502` when the
//!   database or Kafka cannot be reached;
//! - `GET /data/export/` (the seed's path): the same as query parameters, always to
//!   Kafka; `202` at once (the seed blocked until the export ended), or with
//!   `wait=true` `200` once the job ended;
//! - `GET /exports` → `{"exports": [status, …]}`; `GET /exports/{id}` → the status;
//! - `DELETE /exports/{id}` → cancels, answers the status;
//! - `GET /exports/{id}/file` → the file, streamed (`409` until the job succeeded).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use datanexus_export::{
    DatasetRef, ExportRequest, FileFormat, JobState, JobStatus, KafkaTarget, MessageFormat, Target,
};
use datanexus_model::time;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::body::JsonBody;
use crate::http::params::Params;
use crate::{AppState, Error, Result};

/// The body of `POST /exports`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    connection_id: String,
    table: String,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    time_column: Option<String>,
    #[serde(default)]
    start: Option<Value>,
    #[serde(default)]
    end: Option<Value>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    kafka_brokers: Option<String>,
    #[serde(default)]
    send_topic: Option<String>,
}

/// Where an export goes: Kafka when a topic or brokers are named (`format` `json` by
/// default, or `protobuf`), else a file of `format`.
fn target(format: Option<&str>, brokers: Option<&str>, topic: Option<&str>) -> Result<Target> {
    if brokers.is_none() && topic.is_none() {
        let format = format.ok_or_else(|| {
            Error::Invalid(
                "format is required: \"ndjson\", \"csv\" or \"parquet\" (or kafka_brokers \
                 and send_topic for Kafka)"
                    .to_owned(),
            )
        })?;
        return Ok(Target::File(FileFormat::parse(format)?));
    }
    let format = MessageFormat::parse(format.unwrap_or("json"))?;
    let topic = topic.ok_or_else(|| Error::Invalid("send_topic is required".to_owned()))?;
    Ok(Target::Kafka(KafkaTarget::new(
        brokers.unwrap_or_default(),
        topic,
        format,
    )?))
}

/// A time of the body: RFC 3339 or Unix seconds, as a string or a number.
fn time_of(name: &str, v: Option<&Value>) -> Result<Option<i64>> {
    let parsed = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => time::parse(s),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(secs) => time::from_unix_seconds(secs),
            None => time::from_unix_seconds_f64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Some(other) => {
            return Err(Error::Invalid(format!(
                "invalid {name} {other}: expected RFC 3339 or Unix seconds"
            )));
        }
    };
    parsed
        .map(Some)
        .map_err(|e| Error::Invalid(format!("invalid {name}: {e}")))
}

/// Handles `POST /exports`.
pub(crate) async fn start(
    State(state): State<AppState>,
    body: Result<JsonBody>,
) -> Result<(StatusCode, Json<JobStatus>)> {
    let body = body?;
    let b: ExportBody = serde_json::from_slice(&body.0)
        .map_err(|e| Error::Invalid(format!("invalid export: {e}")))?;
    let request = ExportRequest {
        start_ns: time_of("start", b.start.as_ref())?,
        end_ns: time_of("end", b.end.as_ref())?,
        target: target(
            b.format.as_deref(),
            b.kafka_brokers.as_deref(),
            b.send_topic.as_deref(),
        )?,
        dataset: DatasetRef {
            table: b.table,
            database: b.database.filter(|d| !d.is_empty()),
            time_column: b.time_column.filter(|c| !c.is_empty()),
        },
        connection_id: b.connection_id,
    };
    let spec = state.connections().get(&request.connection_id).await?;
    let status = state.exports().start(&spec, request).await?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

/// Handles `GET /data/export/` (the seed's export to Kafka).
pub(crate) async fn seed_export(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<(StatusCode, Json<JobStatus>)> {
    let mut p = params?;
    let required = |p: &mut Params, name: &str| -> Result<String> {
        p.string(name)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::Invalid(format!("missing parameter {name}")))
    };
    let connection_id = required(&mut p, "connection_id")?;
    let table = required(&mut p, "table")?;
    let brokers = required(&mut p, "kafka_brokers")?;
    let topic = required(&mut p, "send_topic")?;
    let range = p.range("start", "end")?;
    let format = p.string("format")?;
    let request = ExportRequest {
        connection_id,
        dataset: DatasetRef {
            table,
            database: p.string("database")?.filter(|d| !d.is_empty()),
            time_column: p.string("time_column")?.filter(|c| !c.is_empty()),
        },
        start_ns: range.start_ns,
        end_ns: range.end_ns,
        target: target(
            Some(format.as_deref().unwrap_or("json")),
            Some(&brokers),
            Some(&topic),
        )?,
    };
    let wait = p.flag("wait")?;
    p.finish()?;
    let spec = state.connections().get(&request.connection_id).await?;
    let exports = state.exports();
    let status = exports.start(&spec, request).await?;
    if !wait {
        return Ok((StatusCode::ACCEPTED, Json(status)));
    }
    let mut status = status;
    while status.state == JobState::Running {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = exports.get(&status.job_id)?;
    }
    Ok((StatusCode::OK, Json(status)))
}

/// Handles `GET /exports`.
pub(crate) async fn list(
    State(state): State<AppState>,
    params: Result<Params>,
) -> Result<Json<Value>> {
    params?.finish()?;
    Ok(Json(json!({ "exports": state.exports().list() })))
}

/// Handles `GET /exports/{id}`.
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>> {
    Ok(Json(state.exports().get(&id)?))
}

/// Handles `DELETE /exports/{id}`.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>> {
    Ok(Json(state.exports().cancel(&id)?))
}

/// Handles `GET /exports/{id}/file`.
pub(crate) async fn file(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let (path, format) = state.exports().file(&id)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?
        .len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}
