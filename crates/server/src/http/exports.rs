//! Export jobs, scope `admin`:
//!
//! - `POST /exports` with `{"connection_id", "table", "database", "time_column",
//!   "start", "end", "format": "ndjson" | "csv" | "parquet"}` → `202` and the job's
//!   status (`start`/`end`: RFC 3339 or Unix seconds, both included; absent = the
//!   dataset's first/last row); `400` for a bad request, `404` for an unknown
//!   connection or dataset, `502` when the database cannot be reached;
//! - `GET /exports` → `{"exports": [status, …]}`; `GET /exports/{id}` → the status;
//! - `DELETE /exports/{id}` → cancels, answers the status;
//! - `GET /exports/{id}/file` → the file, streamed (`409` until the job succeeded).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use datanexus_export::{DatasetRef, ExportRequest, FileFormat, JobStatus};
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
    format: String,
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
        format: FileFormat::parse(&b.format)?,
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
