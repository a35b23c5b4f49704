//! A small client of the InfluxDB 1.x HTTP API (`/ping`, `/query`) over plain HTTP.
//! Credentials go as the `u`/`p` parameters or a `Token` authorization header, never
//! into a message.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::{ConnectionSpec, Error, Result};

/// Where an InfluxDB listens: `http://host:port`, without a trailing `/`.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    base: String,
}

impl Endpoint {
    /// Checks an InfluxDB URL.
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything but an `http://` URL with a host.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        if url.starts_with("https://") {
            return Err(Error::Invalid(
                "https:// InfluxDB URLs are not supported yet: use http:// (on a trusted \
                 network or through a local TLS-terminating proxy)"
                    .to_owned(),
            ));
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(Error::Invalid(format!(
                "invalid InfluxDB url {:?}: expected http://host:port",
                crate::connections::redact_url(url)
            )));
        };
        let base = format!("http://{}", rest.trim_end_matches('/'));
        let uri: hyper::Uri = base.parse().map_err(|e| {
            Error::Invalid(format!(
                "invalid InfluxDB url {:?}: {e}",
                crate::connections::redact_url(url)
            ))
        })?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(Error::Invalid(format!(
                "invalid InfluxDB url {:?}: no host",
                crate::connections::redact_url(url)
            )));
        }
        Ok(Endpoint { base })
    }
}

/// A client of one InfluxDB with a connection's credentials.
pub(crate) struct Influx {
    endpoint: Endpoint,
    client: Client<HttpConnector, Empty<Bytes>>,
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

impl Influx {
    /// A client for `spec` (an `influx` connection).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad URL.
    pub(crate) fn new(spec: &ConnectionSpec) -> Result<Self> {
        let endpoint = Endpoint::parse(&spec.url)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(Influx {
            client: Client::builder(TokioExecutor::new()).build(connector),
            endpoint,
            username: spec.username.clone(),
            password: spec.password.clone(),
            token: spec.token.clone(),
        })
    }

    /// How the server is named in messages (no credentials).
    pub(crate) fn name(&self) -> String {
        format!(
            "influxdb at {}",
            crate::connections::redact_url(&self.endpoint.base)
        )
    }

    /// `GET /ping`: the server answers (204).
    pub(crate) async fn ping(&self) -> Result<()> {
        let (status, body) = self.get("/ping", false).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.refused(status, &body))
        }
    }

    /// Runs an InfluxQL query (`GET /query?q=…&epoch=ns`, `db=` when given) with the
    /// credentials; returns the JSON answer, times as nanoseconds since the epoch.
    /// An `error` in the answer is an error.
    pub(crate) async fn query(&self, q: &str, db: Option<&str>) -> Result<serde_json::Value> {
        let mut path = format!("/query?q={}&epoch=ns", percent_encode(q));
        if let Some(db) = db {
            path.push_str(&format!("&db={}", percent_encode(db)));
        }
        let (status, body) = self.get(&path, true).await?;
        if !status.is_success() {
            return Err(self.refused(status, &body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Error::Unreachable(format!("{}: not an InfluxDB answer: {e}", self.name()))
        })?;
        let error = v["error"]
            .as_str()
            .or_else(|| v["results"][0]["error"].as_str());
        if let Some(error) = error {
            return Err(Error::Invalid(format!("{}: {error}", self.name())));
        }
        Ok(v)
    }

    /// The databases (`SHOW DATABASES`).
    pub(crate) async fn databases(&self) -> Result<Vec<String>> {
        let v = self.query("SHOW DATABASES", None).await?;
        let values = v["results"][0]["series"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(values
            .iter()
            .filter_map(|row| row[0].as_str().map(str::to_owned))
            .collect())
    }

    async fn get(
        &self,
        path_and_query: &str,
        with_credentials: bool,
    ) -> Result<(StatusCode, Bytes)> {
        let response = self.send(path_and_query, with_credentials).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Unreachable(format!("{}: reading the answer: {e}", self.name())))?
            .to_bytes();
        Ok((status, body))
    }

    /// Runs an InfluxQL query with `chunked=true` and `epoch=ns`: the answer's body is
    /// one JSON document per line, each of at most `chunk_size` rows.
    pub(crate) async fn query_chunked(
        &self,
        q: &str,
        db: &str,
        chunk_size: usize,
    ) -> Result<Incoming> {
        let path = format!(
            "/query?q={}&db={}&epoch=ns&chunked=true&chunk_size={chunk_size}",
            percent_encode(q),
            percent_encode(db)
        );
        let response = self.send(&path, true).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(self.refused(status, &body));
        }
        Ok(response.into_body())
    }

    async fn send(
        &self,
        path_and_query: &str,
        with_credentials: bool,
    ) -> Result<hyper::Response<Incoming>> {
        let mut uri = format!("{}{path_and_query}", self.endpoint.base);
        let mut request = Request::get("/");
        if with_credentials {
            if let Some(u) = &self.username {
                let sep = if uri.contains('?') { '&' } else { '?' };
                uri.push_str(&format!("{sep}u={}", percent_encode(u)));
                if let Some(p) = &self.password {
                    uri.push_str(&format!("&p={}", percent_encode(p)));
                }
            }
            if let Some(token) = &self.token {
                request = request.header(hyper::header::AUTHORIZATION, format!("Token {token}"));
            }
        }
        let request = request
            .uri(uri)
            .body(Empty::new())
            .map_err(|e| Error::Invalid(format!("{}: bad request: {e}", self.name())))?;
        self.client.request(request).await.map_err(|e| {
            let mut message = format!("{}: {e}", self.name());
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            Error::Unreachable(message)
        })
    }

    fn refused(&self, status: StatusCode, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(body);
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(200).collect());
        let what = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            "authentication failed"
        } else {
            "refused"
        };
        Error::Unreachable(format!("{}: {what} ({status}): {detail}", self.name()))
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8086/").unwrap().base,
            "http://127.0.0.1:8086"
        );
        let e = Endpoint::parse("https://h:8086").unwrap_err().to_string();
        assert!(e.contains("not supported yet"), "{e}");
        let e = Endpoint::parse("influx:8086").unwrap_err().to_string();
        assert!(e.contains("http://host:port"), "{e}");
        let e = Endpoint::parse("http://").unwrap_err().to_string();
        assert!(e.contains("invalid InfluxDB url"), "{e}");
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(percent_encode("SHOW DATABASES"), "SHOW%20DATABASES");
        assert_eq!(percent_encode("a&b=c/é"), "a%26b%3Dc%2F%C3%A9");
    }
}
