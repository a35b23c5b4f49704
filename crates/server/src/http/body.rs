//! The body extractors of the ingest endpoints: [`JsonBody`] checks the content type
//! and reads the (already decompressed) body up to `max_http_body_bytes`;
//! [`read_body`] reads any body under the same limit. Decoding is
//! `datanexus_ingest`'s. Every failure is an [`Error`], so clients get our
//! `{"error": "..."}` shape, not axum's plain-text rejections.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::{AppState, Error, Result};

/// A JSON request body (content type checked, size bounded), to be decoded by
/// `datanexus_ingest::json`.
#[derive(Debug)]
pub(crate) struct JsonBody(pub(crate) Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        require_json(req.headers())?;
        let bytes = read_body(req, state.options().max_http_body_bytes).await?;
        Ok(JsonBody(bytes))
    }
}

/// Accepts `application/json` and `application/<anything>+json`, with parameters.
fn require_json(headers: &HeaderMap) -> Result<()> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(Error::UnsupportedMediaType(
            "missing content-type, expected application/json".into(),
        ));
    };
    let text = value.to_str().unwrap_or_default();
    let mime = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(format!(
            "unsupported content-type {text:?}, expected application/json"
        )))
    }
}

/// Reads the whole body, refusing more than `limit` bytes. Runs after request
/// decompression, so `limit` caps the decompressed size (a small gzip bomb gets 413).
pub(crate) async fn read_body(req: Request, limit: usize) -> Result<Bytes> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    let mut stream = req.into_body().into_data_stream();
    // Trust the declared length for preallocation only up to 1 MiB.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(1 << 20));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match crate::budget::over_budget(&e) {
            Some(why) => Error::Overloaded(why),
            None => Error::Invalid(format!("could not read the request body: {e}")),
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_must_be_json() {
        let mut headers = HeaderMap::new();
        assert!(matches!(
            require_json(&headers),
            Err(Error::UnsupportedMediaType(_))
        ));
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(
            require_json(&headers)
                .unwrap_err()
                .to_string()
                .contains("\"text/plain\"")
        );
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(require_json(&headers).is_ok());
        headers.insert(
            header::CONTENT_TYPE,
            "application/vnd.api+json".parse().unwrap(),
        );
        assert!(require_json(&headers).is_ok());
    }
}
