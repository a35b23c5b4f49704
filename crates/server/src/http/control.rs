//! The control node's own routes (`--role control`): `GET /control/nodes` (each worker
//! node's state, last contact, backlog and series), `POST /control/nodes` (replace the
//! node list until restart; admin), and [`partial_answers`], the layer of the query
//! routes that turns `partial=true` into a merged answer of the nodes that answered
//! plus `"partial": [missing nodes]` instead of a 503.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use datanexus_model::time::format_rfc3339;
use datanexus_store::scatter;
use datanexus_store_cluster::ClusterStore;
use serde_json::{Value, json};

use crate::http::body::JsonBody;
use crate::{AppState, Error, Result};

/// The header that names the nodes missing from a partial answer.
pub(crate) const PARTIAL_HEADER: &str = "x-datanexus-partial";

fn control(state: &AppState) -> Result<&ClusterStore> {
    state.control().ok_or_else(|| {
        Error::NotFound(
            "this process is not a control node (serve --role control --nodes …)".to_owned(),
        )
    })
}

/// The nodes' status as JSON; with `series`, each node's series count (asked of the
/// nodes now), else only what the control node knows already.
pub(crate) async fn nodes_json(control: &ClusterStore, series: bool) -> Value {
    let series = if series {
        control.series_counts().await
    } else {
        Vec::new()
    };
    let nodes: Vec<Value> = control
        .status()
        .into_iter()
        .map(|s| {
            let count = series
                .iter()
                .find(|(url, _)| *url == s.url)
                .and_then(|(_, n)| *n);
            json!({
                "url": s.url,
                "state": s.state,
                "last_contact": s.last_contact_ms.map(|ms| format_rfc3339(ms.saturating_mul(1_000_000))),
                "last_error": s.last_error,
                "backlog": s.backlog,
                "forwarded": s.forwarded,
                "series": count,
            })
        })
        .collect();
    json!({ "nodes": nodes })
}

/// Handles `GET /control/nodes`.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Value>> {
    Ok(Json(nodes_json(control(&state)?, true).await))
}

/// Handles `POST /control/nodes`: `{"nodes": ["http://host:port", …]}`.
pub(crate) async fn replace(
    State(state): State<AppState>,
    body: Result<JsonBody>,
) -> Result<Json<Value>> {
    let control = control(&state)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewNodes {
        nodes: Vec<String>,
    }
    let JsonBody(bytes) = body?;
    let new: NewNodes = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Invalid(format!(
            "expected {{\"nodes\": [\"http://host:port\", …]}}: {e}"
        ))
    })?;
    control
        .set_nodes(&new.nodes)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    tracing::info!(nodes = ?new.nodes, "control node list replaced (until restart)");
    Ok(Json(nodes_json(control, true).await))
}

/// The layer of the query routes: with `partial=true` (removed from the query before
/// the handler parses it), nodes that do not answer are left out of the merged answer
/// and named in the `X-Datanexus-Partial` header and, for a JSON object answer, a
/// `"partial"` field. `partial=false` (the default) keeps failing with 503.
pub(crate) async fn partial_answers(mut request: Request, next: Next) -> Response {
    let (allowed, rest) = match take_partial(request.uri()) {
        Ok(taken) => taken,
        Err(e) => return e.into_response(),
    };
    if let Some(uri) = rest {
        *request.uri_mut() = uri;
    }
    if !allowed {
        return next.run(request).await;
    }
    let (response, missing) = scatter::allowing_partial(next.run(request)).await;
    if missing.is_empty() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    if let Ok(v) = HeaderValue::from_str(&missing.join(", ")) {
        parts.headers.insert(PARTIAL_HEADER, v);
    }
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Error::Internal("cannot read a partial answer".to_owned()).into_response();
    };
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut object)) => {
            object.insert("partial".to_owned(), json!(missing));
            serde_json::to_vec(&object).unwrap_or_else(|_| bytes.to_vec())
        }
        _ => bytes.to_vec(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Whether the query says `partial=true`, and the URI without the parameter when it
/// had one.
fn take_partial(uri: &Uri) -> Result<(bool, Option<Uri>)> {
    let Some(query) = uri.query() else {
        return Ok((false, None));
    };
    let mut allowed = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "partial" {
            kept.push(pair);
            continue;
        }
        allowed = Some(match value {
            "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(Error::Invalid(format!(
                    "invalid parameter partial={other:?}: expected true or false"
                )));
            }
        });
    }
    let Some(allowed) = allowed else {
        return Ok((false, None));
    };
    let path = uri.path();
    let rebuilt = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let uri = rebuilt
        .parse()
        .map_err(|e| Error::Invalid(format!("invalid request URI: {e}")))?;
    Ok((allowed, Some(uri)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_parameter_is_taken_out_of_the_query() {
        let uri: Uri = "/metrics/cpu?partial=true&limit=5".parse().unwrap();
        let (allowed, rest) = take_partial(&uri).unwrap();
        assert!(allowed);
        assert_eq!(rest.unwrap(), "/metrics/cpu?limit=5");
        let (allowed, rest) = take_partial(&"/data?partial=0".parse().unwrap()).unwrap();
        assert!(!allowed);
        assert_eq!(rest.unwrap(), "/data");
        assert_eq!(
            take_partial(&"/data?limit=1".parse().unwrap()).unwrap(),
            (false, None)
        );
        assert!(take_partial(&"/data?partial=yes".parse().unwrap()).is_err());
    }
}
