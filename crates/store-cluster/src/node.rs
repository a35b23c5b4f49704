//! One worker node: the HTTP calls of its internal store API (each bounded by the
//! timeout, with the control node's bearer token) and what the control node knows
//! about it (state, last contact, last error, records in flight).

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire;

/// Largest answer read from a node (a query's samples, an aggregate's values).
const MAX_ANSWER_BYTES: usize = 1 << 30;

/// Why a node call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFailure {
    /// The node answered 404 (it has nothing for the measurement).
    NotFound(String),
    /// The node refused the request as invalid (4xx): the same query fails everywhere.
    Invalid(String),
    /// No answer in time, no connection, or a 5xx.
    Down(String),
}

impl NodeFailure {
    /// What went wrong.
    pub fn message(&self) -> &str {
        match self {
            NodeFailure::NotFound(m) | NodeFailure::Invalid(m) | NodeFailure::Down(m) => m,
        }
    }
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A worker node and what the control node last saw of it.
#[derive(Debug)]
pub struct Node {
    url: String,
    state: AtomicU8,
    /// Milliseconds since the Unix epoch of the last answer (0: never).
    last_contact_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// Records of batches being sent right now.
    in_flight: AtomicU64,
    /// Records the node confirmed durable since this process started.
    forwarded: AtomicU64,
}

/// A node's status (`GET /control/nodes`, `/ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Its base URL.
    pub url: String,
    /// `up` (its last call succeeded), `down` (failed) or `unknown` (not called yet).
    pub state: &'static str,
    /// When it last answered, in milliseconds since the Unix epoch.
    pub last_contact_ms: Option<i64>,
    /// Why its last failed call failed.
    pub last_error: Option<String>,
    /// Records placed on it and not yet confirmed durable there (buffered or in
    /// flight); records still in the control node's log are not counted.
    pub backlog: u64,
    /// Records it confirmed durable since the control node started.
    pub forwarded: u64,
}

impl Node {
    pub(crate) fn new(url: String) -> Node {
        Node {
            url,
            state: AtomicU8::new(UNKNOWN),
            last_contact_ms: AtomicI64::new(0),
            last_error: Mutex::new(None),
            in_flight: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        }
    }

    /// Its base URL (`http://host:port`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn status(&self, backlog: u64) -> NodeStatus {
        let last = self.last_contact_ms.load(Ordering::Relaxed);
        NodeStatus {
            url: self.url.clone(),
            state: match self.state.load(Ordering::Relaxed) {
                UP => "up",
                DOWN => "down",
                _ => "unknown",
            },
            last_contact_ms: (last > 0).then_some(last),
            last_error: self.last_error.lock().clone(),
            backlog,
            forwarded: self.forwarded.load(Ordering::Relaxed),
        }
    }

    fn answered(&self) {
        self.state.store(UP, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.last_contact_ms.store(now, Ordering::Relaxed);
    }

    fn failed(&self, why: &str) {
        self.state.store(DOWN, Ordering::Relaxed);
        *self.last_error.lock() = Some(why.to_owned());
    }
}

/// `http://host:port` from a node URL (no trailing `/`).
///
/// # Errors
/// A message for anything else (`https://` is not supported yet).
pub(crate) fn base_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!(
                "{url}: https:// nodes are not supported yet (use http:// on a private network)"
            )
        } else {
            format!("{url}: expected http://host:port")
        }
    })?;
    let rest = rest.trim_end_matches('/');
    let base = format!("http://{rest}");
    let uri: hyper::Uri = base.parse().map_err(|e| format!("{url}: {e}"))?;
    if uri.host().is_none_or(str::is_empty) || rest.contains(['/', '?', '#']) {
        return Err(format!("{url}: expected http://host:port"));
    }
    Ok(base)
}

/// The HTTP client of every node (one connection pool).
pub(crate) struct Client {
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    authorization: Option<String>,
    timeout: Duration,
}

impl Client {
    pub(crate) fn new(token: Option<String>, timeout: Duration) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        Client {
            http: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            authorization: token.map(|t| format!("Bearer {t}")),
            timeout,
        }
    }

    /// Sends a write batch of `records` records; `Ok` once the node confirmed it
    /// durable.
    pub(crate) async fn write(
        &self,
        node: &Node,
        body: Vec<u8>,
        records: u64,
    ) -> Result<(), NodeFailure> {
        node.in_flight.fetch_add(records, Ordering::Relaxed);
        let answer = self
            .call(
                node,
                Method::POST,
                wire::WRITE_PATH,
                wire::BATCH_CONTENT_TYPE,
                body,
            )
            .await;
        node.in_flight.fetch_sub(records, Ordering::Relaxed);
        if answer.is_ok() {
            node.forwarded.fetch_add(records, Ordering::Relaxed);
        }
        answer.map(|_| ())
    }

    /// `POST`s `query` as JSON and reads a JSON answer.
    pub(crate) async fn post_json<Q: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        node: &Node,
        path: &str,
        query: &Q,
    ) -> Result<R, NodeFailure> {
        let bytes = self.post_bytes(node, path, query).await?;
        decode(node, path, &bytes)
    }

    /// `POST`s `query` as JSON and returns the answer's bytes.
    pub(crate) async fn post_bytes<Q: Serialize + ?Sized>(
        &self,
        node: &Node,
        path: &str,
        query: &Q,
    ) -> Result<Bytes, NodeFailure> {
        let body = serde_json::to_vec(query)
            .map_err(|e| NodeFailure::Invalid(format!("cannot encode the query: {e}")))?;
        self.call(node, Method::POST, path, "application/json", body)
            .await
    }

    /// `GET`s `path` and reads a JSON answer.
    pub(crate) async fn get_json<R: DeserializeOwned>(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<R, NodeFailure> {
        let bytes = self
            .call(node, Method::GET, path, "application/json", Vec::new())
            .await?;
        decode(node, path, &bytes)
    }

    async fn call(
        &self,
        node: &Node,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, NodeFailure> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", node.url))
            .header(hyper::header::CONTENT_TYPE, content_type);
        if let Some(auth) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| NodeFailure::Invalid(format!("cannot build the request: {e}")))?;
        let answer = tokio::time::timeout(self.timeout, self.exchange(node, request))
            .await
            .unwrap_or_else(|_| {
                Err(NodeFailure::Down(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            });
        match &answer {
            Ok(_) | Err(NodeFailure::NotFound(_) | NodeFailure::Invalid(_)) => node.answered(),
            Err(NodeFailure::Down(why)) => {
                node.failed(why);
                tracing::debug!(node = %node.url, path, error = %why, "node call failed");
            }
        }
        answer
    }

    /// Sends `request` and reads the whole answer; a non-2xx status is a failure.
    async fn exchange(
        &self,
        node: &Node,
        request: Request<Full<Bytes>>,
    ) -> Result<Bytes, NodeFailure> {
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| NodeFailure::Down(error_chain(&e)))?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| NodeFailure::Down(format!("reading the answer: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
        let message = format!("{status}: {message}");
        Err(match status {
            // The store's "unknown metric"; any other 404 (no such route: not a Data
            // Nexus node of this version, or a wrong URL) is a node that cannot answer.
            StatusCode::NOT_FOUND if message.contains("unknown metric") => {
                NodeFailure::NotFound(message)
            }
            StatusCode::NOT_FOUND => {
                NodeFailure::Down(format!("{message} (is {} a datanexus node?)", node.url))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                NodeFailure::Down(format!("{message} (check [control] token)"))
            }
            s if s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS => {
                NodeFailure::Invalid(message)
            }
            _ => NodeFailure::Down(message),
        })
    }
}

fn decode<R: DeserializeOwned>(node: &Node, path: &str, bytes: &[u8]) -> Result<R, NodeFailure> {
    serde_json::from_slice(bytes).map_err(|e| {
        let why = format!("{path}: not an answer of this version: {e}");
        node.failed(&why);
        NodeFailure::Down(why)
    })
}

/// An error and its causes, `: `-separated (hyper's own message says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
