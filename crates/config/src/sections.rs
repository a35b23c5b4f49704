//! The plain configuration sections of [`Config`](crate::Config).
//!
//! Each struct has exactly one `impl Default`, which is the single source of
//! truth for its default values (the example file and the docs mirror it).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

const MIB: usize = 1024 * 1024;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The ingest APIs (gRPC services, `POST /metrics`, `/ingest`, `/write`, remote
    /// write) and the event streams.
    Ingest,
    /// Queries, datasets, the exposition, the program's own metrics, readiness.
    Query,
    /// Administration: connections, exports, the control node.
    Admin,
}

impl Scope {
    /// Every scope (what a plain token grants).
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Query, Scope::Admin];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Admin => "admin",
        }
    }
}

/// A token limited to some scopes (`[[auth.tokens]] token = "…", scopes = [...]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedToken {
    /// The bearer token.
    pub token: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// One accepted bearer token: a plain string (every scope) or a [`ScopedToken`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenConfig {
    /// A token with every scope.
    Plain(String),
    /// A token with the scopes it names.
    Scoped(ScopedToken),
}

impl TokenConfig {
    /// The bearer token.
    pub fn token(&self) -> &str {
        match self {
            TokenConfig::Plain(t) => t,
            TokenConfig::Scoped(s) => &s.token,
        }
    }

    /// What it may do.
    pub fn scopes(&self) -> &[Scope] {
        match self {
            TokenConfig::Plain(_) => &Scope::ALL,
            TokenConfig::Scoped(s) => &s.scopes,
        }
    }
}

impl fmt::Debug for TokenConfig {
    /// Never prints the token, only its scopes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes())
            .finish()
    }
}

impl From<String> for TokenConfig {
    fn from(token: String) -> Self {
        TokenConfig::Plain(token)
    }
}

/// A plain token equals its string (a scoped one never does).
impl PartialEq<&str> for TokenConfig {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, TokenConfig::Plain(t) if t == other)
    }
}

impl From<&str> for TokenConfig {
    fn from(token: &str) -> Self {
        TokenConfig::Plain(token.to_owned())
    }
}

/// Bearer-token authentication for the gRPC and HTTP APIs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted bearer tokens: plain strings (every scope) or `{token, scopes}`.
    /// Empty disables authentication, which is only allowed on loopback addresses
    /// unless `insecure` is set.
    pub tokens: Vec<TokenConfig>,
}

impl fmt::Debug for AuthConfig {
    /// Never prints the tokens themselves, only how many there are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .finish()
    }
}

/// TLS of the gRPC and HTTP servers (rustls). Both servers use the same certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain (leaf first). Empty: no TLS.
    pub cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates that sign client certificates: when set,
    /// every client must present one (mutual TLS).
    pub client_ca: PathBuf,
}

impl TlsConfig {
    /// Whether the servers speak TLS.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format `{other}`, expected `text` or `json`"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Logging setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing_subscriber::EnvFilter` directive string, e.g.
    /// `"info,datanexus_broker=debug"`.
    pub level: String,
    /// Output format: `text` or `json`.
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Names of the broker topics the pipeline uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    /// Topic that ingested metric batches are appended to.
    pub metrics: String,
    /// Topic that ingested events are appended to.
    pub events: String,
    /// Topic that processed results are appended to.
    pub results: String,
    /// Dead-letter topic for records that could not be processed.
    pub dlq: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            metrics: "metrics".to_owned(),
            events: "events".to_owned(),
            results: "results".to_owned(),
            dlq: "dlq".to_owned(),
        }
    }
}

/// Names of the consumer groups the workers join (on the broker, e.g. Redis Streams
/// groups or Kafka consumer groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    /// The sinkers of the metrics topic.
    pub metrics: String,
    /// The sinkers of the events topic.
    pub events: String,
    /// The processors (events topic).
    pub processors: String,
    /// The forwarder (results topic).
    pub forwarder: String,
    /// `GET /metrics?drain=true` (metrics topic).
    pub drain: String,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            metrics: "sinker".to_owned(),
            events: "event-sinker".to_owned(),
            processors: "processor".to_owned(),
            forwarder: "forwarder".to_owned(),
            drain: "exposition-drain".to_owned(),
        }
    }
}

/// Connection to a Redis server used for pub/sub fan-out (the seed's
/// `RedisConfig`). Independent of the Redis *broker* backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL, `redis://` or `rediss://`, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Maximum number of pooled connections (accepted for the seed's option; one
    /// multiplexed connection per use is opened).
    pub pool_size: u32,
    /// Prefix of the fan-out's keys and channels.
    pub prefix: String,
    /// With `rediss://`: a PEM file of CA certificates to verify the server with instead
    /// of the system's trust store. Empty: the system's.
    pub tls_ca: PathBuf,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            pool_size: 8,
            prefix: "datanexus".to_owned(),
            tls_ca: PathBuf::new(),
        }
    }
}

/// What one `datanexus serve` process runs.
///
/// | role | servers (gRPC, HTTP) | workers | store |
/// |---|---|---|---|
/// | `all` | yes | sinkers, processors, forwarder | opened, queries served |
/// | `gateway` | yes (ingest, streams) | none | none opened: queries answer 503 naming the `store` role |
/// | `processor` | yes (ingest works; queries 503) | processors | none opened |
/// | `store` | yes (queries served here) | sinkers, forwarder | opened |
///
/// Separate roles need the Redis result fan-out (`[redis]`, or else the Redis broker's
/// URL); with the embedded broker and no `[redis]`, results are routed inside the
/// process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in one process (default).
    #[default]
    All,
    /// Ingest APIs and client event streams; no workers, no store (queries go to the
    /// `store` role).
    Gateway,
    /// The processors (events → results).
    Processor,
    /// The sinkers and the forwarder into the store, and the query API.
    Store,
    /// Everything of `all`, but its store is the worker nodes of `[control] nodes`: each
    /// series is written to the node jump hash picks for it, and queries are scattered
    /// to every node and merged (the RaftMetrics seed's control node).
    Control,
}

impl Role {
    /// Whether a process of this role opens the store (its sinkers and forwarder write
    /// it, its queries read it).
    pub fn opens_store(self) -> bool {
        matches!(self, Role::All | Role::Store | Role::Control)
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Processor => "processor",
            Role::Store => "store",
            Role::Control => "control",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Role::All),
            "gateway" => Ok(Role::Gateway),
            "processor" => Ok(Role::Processor),
            "store" => Ok(Role::Store),
            "control" => Ok(Role::Control),
            other => Err(format!(
                "unknown role `{other}`, expected `all`, `gateway`, `processor`, `store` or \
                 `control`"
            )),
        }
    }
}

/// Background worker cadence (the seed's `WorkerConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// How often a worker renews its liveness heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often consumers poll for new records when idle.
    #[serde(with = "humantime_serde")]
    pub consumer_interval: Duration,
    /// How often partitions of dead workers are redistributed.
    #[serde(with = "humantime_serde")]
    pub redistributor_interval: Duration,
    /// How often buffered results are flushed to sinks.
    #[serde(with = "humantime_serde")]
    pub sinker_interval: Duration,
    /// How often processed offsets are acknowledged (committed).
    #[serde(with = "humantime_serde")]
    pub acker_interval: Duration,
    /// Maximum number of records handled per batch.
    pub batch_size: usize,
    /// How long a partition lease survives without renewal; must exceed
    /// `heartbeat_interval`.
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// How long a worker session survives without a heartbeat; must exceed
    /// `heartbeat_interval`.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// This process's consumer name in the broker's consumer groups (each worker
    /// appends its group and index). Empty: `<role>-<pid>-<random>`, new at every start. A
    /// stable name lets a restarted process re-read its own pending records first
    /// (Redis Streams); names must be unique among running processes.
    pub consumer_name: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            consumer_interval: Duration::from_secs(1),
            redistributor_interval: Duration::from_secs(2),
            sinker_interval: Duration::from_secs(1),
            acker_interval: Duration::from_secs(1),
            batch_size: 1000,
            lease_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            consumer_name: String::new(),
        }
    }
}

/// Which store backend holds points, events and stream results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded columnar store: Parquet files in `data_dir/store` (default).
    #[default]
    Embedded,
    /// A PostgreSQL database (`url`; backend in the `postgres` build feature).
    Postgres,
}

impl StoreKind {
    /// The `kind` name.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// The store: where points, events and results rest and are queried.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `embedded` (Parquet files in `data_dir/store`) or `postgres`.
    pub kind: StoreKind,
    /// With `kind = "postgres"`: `postgres://user:password@host:port/db[?sslmode=…]`.
    /// Empty: made from the seed's `POSTGRES_HOST`, `POSTGRES_PORT`, `POSTGRES_USER`,
    /// `POSTGRES_PASSWORD` and `POSTGRES_DB` variables.
    pub url: String,
    /// With `kind = "postgres"`: most connections held open.
    pub pool_size: usize,
    /// With `kind = "postgres"`: how long to wait for a connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Delete samples and events older than this; unset keeps them forever.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub retention_max_age: Option<Duration>,
    /// Flush the store's in-memory head as soon as this many rows are pending (besides
    /// every `workers.sinker_interval`).
    pub max_pending_rows: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Embedded,
            url: String::new(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            retention_max_age: None,
            max_pending_rows: 500_000,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    /// Never prints the URL (it may hold a password), only whether one is set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field(
                "url",
                &if self.url.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("retention_max_age", &self.retention_max_age)
            .field("max_pending_rows", &self.max_pending_rows)
            .finish()
    }
}

impl StoreConfig {
    /// The URL made from the seed's `POSTGRES_*` variables, when `POSTGRES_HOST` or
    /// `POSTGRES_DB` is among `vars` (the others default as libpq's do).
    pub fn url_from_seed_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<String> {
        let mut get = std::collections::HashMap::new();
        for (k, v) in vars {
            if k.starts_with("POSTGRES_") && !v.is_empty() {
                get.insert(k, v);
            }
        }
        if !get.contains_key("POSTGRES_HOST") && !get.contains_key("POSTGRES_DB") {
            return None;
        }
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let host = get.get("POSTGRES_HOST").copied().unwrap_or("localhost");
        let port = get.get("POSTGRES_PORT").copied().unwrap_or("5432");
        // An IPv6 address goes in brackets; a socket directory in the `host` parameter.
        let (host, socket) = if host.starts_with('/') {
            ("localhost".to_owned(), Some(host))
        } else if host.contains(':') && !host.starts_with('[') {
            (format!("[{host}]"), None)
        } else {
            (host.to_owned(), None)
        };
        let user = get.get("POSTGRES_USER").copied().unwrap_or("postgres");
        let auth = match get.get("POSTGRES_PASSWORD") {
            Some(p) => format!("{}:{}", enc(user), enc(p)),
            None => enc(user),
        };
        let db = get.get("POSTGRES_DB").copied().unwrap_or(user);
        let query = socket.map_or_else(String::new, |dir| format!("?host={}", enc(dir)));
        Some(format!(
            "postgres://{auth}@{host}:{port}/{}{query}",
            enc(db)
        ))
    }
}

/// Metric ingestion and exposition limits (the seed's `MetricsConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Histogram bucket upper bounds, finite and strictly ascending
    /// (`+Inf` is implicit).
    pub histogram_buckets: Vec<f64>,
    /// Maximum number of labels on one series.
    pub max_labels: usize,
    /// Maximum size of one label value, in bytes.
    pub max_label_value_bytes: usize,
    /// Maximum size of a metric or label name, in bytes.
    pub max_name_bytes: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            histogram_buckets: vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
            max_labels: 32,
            max_label_value_bytes: 2048,
            max_name_bytes: 256,
        }
    }
}

/// Request-size, concurrency and backpressure limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Maximum (decompressed) HTTP request body, in bytes.
    pub max_http_body_bytes: usize,
    /// Maximum (decompressed) gRPC message, in bytes.
    pub max_grpc_message_bytes: usize,
    /// Maximum number of metrics in one ingest batch.
    pub max_batch_metrics: usize,
    /// Maximum number of events in one `POST /ingest` body.
    pub max_batch_events: usize,
    /// Backpressure budget: records accepted but not yet durably handled.
    /// Must be at least `max_batch_metrics` and `max_batch_events`.
    pub max_inflight_records: usize,
    /// Byte budget: bytes of ingest request bodies (decompressed) and batch messages
    /// held in memory at once, over all requests; beyond it ingestion answers 429 /
    /// `RESOURCE_EXHAUSTED`. Must be at least `max_http_body_bytes` and
    /// `max_grpc_message_bytes`.
    pub max_inflight_bytes: usize,
    /// Per-request deadline for API calls.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long an HTTP/1.1 client gets to send a request's headers; a connection that
    /// trickles them or stalls half-way is closed (slowloris).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Maximum number of API requests served concurrently.
    pub max_concurrent_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_http_body_bytes: 16 * MIB,
            max_grpc_message_bytes: 16 * MIB,
            max_batch_metrics: 50_000,
            max_batch_events: 50_000,
            max_inflight_records: 1_000_000,
            max_inflight_bytes: 256 * MIB,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
        }
    }
}

/// Client event streams (`nimbus.NimbusService.ProcessEvent` and
/// `datanexus.v1.EventStream.Stream`): replay and slow-client limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// Most stored results replayed to a reconnecting client, oldest first; when
    /// more are waiting, only the newest this many are replayed (the dropped ones
    /// are counted as `errors{component="streams",kind="replay_dropped"}`).
    /// 0 disables replay.
    pub max_replay_results: usize,
    /// Results (and acknowledgements) buffered per connected stream before its
    /// client counts as slow, > 0.
    pub channel_capacity: usize,
    /// How long result routing waits for room in a full stream buffer before it
    /// disconnects the client with `RESOURCE_EXHAUSTED`; the client reconnects and
    /// resumes from the store, nothing is lost.
    #[serde(with = "humantime_serde")]
    pub slow_client_timeout: Duration,
    /// Results older than this are not replayed to a reconnecting client (counted as
    /// `errors{component="streams",kind="replay_dropped"}`), > 0.
    #[serde(with = "humantime_serde")]
    pub max_replay_age: Duration,
}

/// The control node (`role = "control"`): the worker nodes it routes writes to and
/// scatters queries over.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// The worker nodes' HTTP base URLs (`http://host:port`), in placement order: a
    /// series belongs to node `jump_hash(xxh3(series), nodes.len())`, so appending a
    /// node moves ~1/n of the series and reordering moves most.
    pub nodes: Vec<String>,
    /// Bearer token sent to the nodes (needs `ingest` and `query` there) when they
    /// require one.
    pub token: Option<String>,
    /// How long a node gets to answer a query or confirm a write.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            token: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for ControlConfig {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("nodes", &self.nodes)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Export jobs (the large-dataset-delivery seed's `jobs` section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Chunks a job's time range is split into (the seed's `dividedJobs`), > 0.
    pub divided_jobs: usize,
    /// Chunks of one job read at once (the seed's `workerNum`), > 0.
    pub worker_num: usize,
    /// Attempts after the first for a chunk that fails.
    pub retries: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            divided_jobs: 48,
            worker_num: 6,
            retries: 3,
        }
    }
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            max_replay_results: 100_000,
            channel_capacity: 1024,
            slow_client_timeout: Duration::from_secs(5),
            max_replay_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
