//! The JSON body extractor of the ingest endpoints: checks the content type, reads the
//! (already decompressed) body up to `max_http_body_bytes`, and parses either one object
//! or an array of them. Every failure is an [`Error`], so clients get our
//! `{"error": "..."}` shape with serde's message and the path of the offending field
//! (`invalid JSON body: [2].value: invalid type: string "1", expected f64 at …`), not
//! axum's plain-text rejections.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::{AppState, Error, Result};

/// One JSON object, or an array of them.
#[derive(Debug)]
pub(crate) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for OneOrMany<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        require_json(req.headers())?;
        let bytes = read_body(req, state.options().max_http_body_bytes).await?;
        parse_one_or_many(&bytes)
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
        let chunk =
            chunk.map_err(|e| Error::Invalid(format!("could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub(crate) fn parse_one_or_many<T: DeserializeOwned>(bytes: &[u8]) -> Result<OneOrMany<T>> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(Error::Invalid(
            "empty request body, expected a JSON object or array".into(),
        )),
        Some(b'[') => parse(bytes).map(OneOrMany::Many),
        Some(_) => parse(bytes).map(OneOrMany::One),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::Invalid(format!("invalid JSON body: {inner}"))
        } else {
            Error::Invalid(format!("invalid JSON body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| Error::Invalid(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Item {
        value: f64,
    }

    #[test]
    fn parses_one_object_or_an_array() {
        assert!(matches!(
            parse_one_or_many::<Item>(br#" {"value": 1}"#),
            Ok(OneOrMany::One(Item { value: 1.0 }))
        ));
        let many = parse_one_or_many::<Item>(br#"[{"value": 1}, {"value": 2}]"#).unwrap();
        assert!(matches!(many, OneOrMany::Many(v) if v.len() == 2));
    }

    #[test]
    fn errors_name_the_path_and_the_problem() {
        let e = parse_one_or_many::<Item>(br#"[{"value": 1}, {"value": "2"}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[1].value") && e.contains("invalid type: string \"2\""),
            "{e}"
        );
        let e = parse_one_or_many::<Item>(b"{\"value\": ")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid JSON body: "), "{e}");
        let e = parse_one_or_many::<Item>(br#"{"value": 1} x"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("trailing characters"), "{e}");
        assert!(
            parse_one_or_many::<Item>(b"  ")
                .unwrap_err()
                .to_string()
                .contains("empty request body")
        );
    }

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
