//! One plain HTTP/1.1 keep-alive connection (hyper's connection-level client): each
//! bench client owns one, so `--clients` is exactly the number of connections.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// A request shape: everything but the body.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) method: Method,
    /// Path and query string.
    pub(crate) path: String,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl Endpoint {
    /// `GET path` on `addr`.
    pub(crate) fn get(addr: SocketAddr, path: impl Into<String>) -> Endpoint {
        Endpoint {
            addr,
            method: Method::GET,
            path: path.into(),
            headers: Vec::new(),
        }
    }

    /// `POST path` on `addr` with `headers`.
    pub(crate) fn post(
        addr: SocketAddr,
        path: impl Into<String>,
        headers: &[(HeaderName, &'static str)],
    ) -> Endpoint {
        Endpoint {
            addr,
            method: Method::POST,
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), HeaderValue::from_static(v)))
                .collect(),
        }
    }

    /// `METHOD http://addr/path`, for reports.
    pub(crate) fn describe(&self) -> String {
        format!("{} http://{}{}", self.method, self.addr, self.path)
    }
}

/// A connected HTTP/1.1 client.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Conn {
    /// Connects to `addr` (TCP_NODELAY, like the server's side).
    ///
    /// # Errors
    /// The connection or the HTTP handshake failed.
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .with_context(|| format!("HTTP handshake with {addr} failed"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "bench HTTP connection ended");
            }
        });
        Ok(Conn {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// Sends one request and reads the whole answer.
    ///
    /// # Errors
    /// A transport error (the connection is then unusable: reconnect).
    pub(crate) async fn send(
        &mut self,
        endpoint: &Endpoint,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(endpoint.method.clone())
            .uri(endpoint.path.as_str())
            .header(HOST, self.host.clone())
            .body(Full::new(body))?;
        request.headers_mut().extend(endpoint.headers.clone());
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// `"<status>: <body>"`, the body cut to 300 bytes, for error reports.
pub(crate) fn describe_failure(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body.get(..300).unwrap_or(body));
    format!("{status}: {}", text.trim())
}
