//! `POST /api/v1/write`: Prometheus remote write 1.0 (decoding in
//! [`crate::remote_write`]).
//!
//! - `Content-Encoding` must be `snappy` when present (anything else is `415`); the
//!   body is always read as one snappy block, as the protocol prescribes. This route
//!   sits outside the gzip decompression layer.
//! - `Content-Type` must be `application/x-protobuf` when present; a `proto=`
//!   parameter other than `prometheus.WriteRequest` (remote write 2.0's
//!   `io.prometheus.write.v2.Request`) is `415`, so a 2.0 sender falls back to 1.0.
//! - The compressed body is capped by `max_http_body_bytes` (`413`), and so is the
//!   decompressed size declared in the snappy header, checked before decompressing.
//! - `204` once every sample is durable; a series that breaks a rule is refused alone:
//!   the others are written, then `400` (which Prometheus does not retry) names the
//!   first refused series and the counts; overload is `429`, an unavailable broker `503` (both
//!   retried by Prometheus).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::body::read_body;
use crate::observe::Api;
use crate::{AppState, Error, Result};

/// Handles `POST /api/v1/write`.
pub(crate) async fn write(State(state): State<AppState>, request: Request) -> Result<Response> {
    let outcome = write_samples(&state, request).await;
    state.observe_ingest(Api::HttpRemoteWrite, outcome, |written| *written)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn write_samples(state: &AppState, request: Request) -> Result<usize> {
    check_headers(request.headers())?;
    let options = state.options();
    let body = read_body(request, options.max_http_body_bytes).await?;
    let decoded = datanexus_ingest::endpoint::POST_REMOTE_WRITE(
        &body,
        options.max_http_body_bytes,
        &options.limits,
        state.remote_write_metadata(),
        options.max_batch_metrics,
    )?;
    let points = decoded.points;
    if !points.is_empty() {
        state.ingestor().points(&points).await?;
    }
    match decoded.first_rejection {
        None => Ok(points.len()),
        Some(first) => Err(Error::Invalid(format!(
            "{} series refused, first: {first}; the {} samples of the other series were written",
            decoded.rejected,
            points.len()
        ))),
    }
}

fn check_headers(headers: &HeaderMap) -> Result<()> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let text = encoding.to_str().unwrap_or_default();
        if !text.trim().eq_ignore_ascii_case("snappy") {
            return Err(Error::UnsupportedMediaType(format!(
                "unsupported content-encoding {text:?}, remote write bodies are snappy"
            )));
        }
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or_default();
        let mut parts = text.split(';').map(str::trim);
        let mime = parts.next().unwrap_or_default();
        let proto = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("proto"))
            .map(|(_, v)| v.trim().trim_matches('"'));
        let accepted = mime.eq_ignore_ascii_case("application/x-protobuf")
            && proto.is_none_or(|p| p == "prometheus.WriteRequest");
        if !accepted {
            return Err(Error::UnsupportedMediaType(format!(
                "unsupported content-type {text:?}, expected application/x-protobuf \
                 (remote write 1.0, prometheus.WriteRequest)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn accepts_remote_write_1_0_headers_only() {
        assert!(check_headers(&HeaderMap::new()).is_ok());
        assert!(
            check_headers(&headers(&[
                (header::CONTENT_ENCODING, "snappy"),
                (header::CONTENT_TYPE, "application/x-protobuf"),
            ]))
            .is_ok()
        );
        assert!(
            check_headers(&headers(&[(
                header::CONTENT_TYPE,
                "application/x-protobuf;proto=prometheus.WriteRequest"
            )]))
            .is_ok()
        );
        for bad in [
            (header::CONTENT_ENCODING, "gzip"),
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_TYPE,
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            ),
        ] {
            let err = check_headers(&headers(std::slice::from_ref(&bad))).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedMediaType(_)),
                "{bad:?}: {err}"
            );
        }
    }
}
