//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Data Nexus: receive metrics and events (gRPC, HTTP JSON), queue them durably, and
/// serve them back.
#[derive(Debug, Parser)]
#[command(name = "datanexus", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server (gRPC + HTTP) with the embedded durable log in --data-dir.
    #[command(after_long_help = SERVE_ENV_HELP)]
    Serve(Box<ServeArgs>),
    /// Print the records of a topic in the embedded log as JSON lines.
    Consume(ConsumeArgs),
    /// Generate load against a running server and report throughput and latency.
    Bench(BenchArgs),
    /// Sample clients of the gRPC services.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Tools of the control node's cluster (`serve --role control`).
    #[command(subcommand)]
    Control(ControlCommand),
    /// Export a dataset (PostgreSQL table, InfluxDB measurement) over a time range to a
    /// Kafka topic or a file, with a progress bar and a final table.
    Export(Box<ExportArgs>),
    /// Read a topic as a consumer group (the large-dataset-delivery seed's client):
    /// print the records, or call an HTTP URL per record; commits only what was handled.
    #[cfg(feature = "kafka")]
    ExportConsume(ExportConsumeArgs),
    /// Exit 0 when a server answers `GET /health` (or with --ready `GET /ready`) with
    /// 200: for container health checks and exec probes, where no curl is installed.
    Healthcheck(HealthcheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout.
    #[command(hide = true)]
    Manpage,
}

/// Flags of `datanexus healthcheck`.
#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// The server's HTTP address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) http_addr: SocketAddr,
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
    /// Check readiness (`GET /ready`: broker and store reachable) instead of liveness.
    #[arg(long)]
    pub(crate) ready: bool,
    /// Bearer token for `/ready` [default: the first of DATANEXUS_AUTH_TOKENS].
    #[arg(long, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
}

/// `datanexus control …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ControlCommand {
    /// Move the old data of every series whose owner changed (after nodes were added)
    /// to its owner: copy, verify, then delete from the old node. Safe to interrupt and
    /// run again. The token (admin, ingest and query on the nodes) comes from
    /// DATANEXUS_CONTROL__TOKEN.
    Rebalance(RebalanceArgs),
}

/// Flags of `datanexus control rebalance`.
#[derive(Debug, Args)]
pub(crate) struct RebalanceArgs {
    /// The worker nodes, comma-separated, in placement order: the control node's
    /// `--nodes` (the new list).
    #[arg(long, value_name = "URLS", value_delimiter = ',', required = true)]
    pub(crate) nodes: Vec<String>,
    /// How long a node gets per call.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
}

/// Flags of `datanexus completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// `datanexus client …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Stream events over nimbus.NimbusService.ProcessEvent and print each response.
    Stream(StreamArgs),
    /// Send one metric over data_nexus or raftmetrics.v1 and print the answer.
    Metric(MetricArgs),
}

/// Flags of `datanexus client stream`.
#[derive(Debug, Args)]
pub(crate) struct StreamArgs {
    /// Server gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub(crate) addr: String,
    /// The client id (sent as metadata `client_id`).
    #[arg(long)]
    pub(crate) client_id: String,
    /// First number to send.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub(crate) start: i32,
    /// Last number to send; `--start 0 --end 0` only listens.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub(crate) end: i32,
    /// Event name (processor).
    #[arg(long, default_value = "sq")]
    pub(crate) event: String,
    /// Bearer token.
    #[arg(long)]
    pub(crate) token: Option<String>,
}

/// Which metric service to call.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum MetricApi {
    /// data_nexus.MetricsService.IngestMetric.
    DataNexus,
    /// raftmetrics.v1.MetricsService.SendMetric.
    Raftmetrics,
}

/// Flags of `datanexus client metric`.
#[derive(Debug, Args)]
pub(crate) struct MetricArgs {
    /// Server gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub(crate) addr: String,
    /// Service to call.
    #[arg(long, value_enum, default_value = "data-nexus")]
    pub(crate) api: MetricApi,
    /// Metric name.
    #[arg(long)]
    pub(crate) name: String,
    /// Value.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) value: f64,
    /// Metric type (data_nexus only): counter, gauge, histogram, summary, untyped.
    #[arg(long = "type", default_value = "")]
    pub(crate) r#type: String,
    /// Label `k=v` (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub(crate) labels: Vec<String>,
    /// Bearer token.
    #[arg(long)]
    pub(crate) token: Option<String>,
}

const SERVE_ENV_HELP: &str = "\
Configuration layers, later wins: built-in defaults < TOML file (--config or
DATANEXUS_CONFIG) < DATANEXUS_* environment variables < command-line flags.

Environment variables: DATANEXUS_GRPC_ADDR, DATANEXUS_HTTP_ADDR, DATANEXUS_DATA_DIR,
DATANEXUS_AUTH_TOKENS (comma-separated), DATANEXUS_INSECURE, DATANEXUS_LOG_LEVEL,
DATANEXUS_LOG_FORMAT, and any nested key with `__`, e.g. DATANEXUS_BROKER__FSYNC=never,
DATANEXUS_LIMITS__MAX_HTTP_BODY_BYTES=1048576. See config/example.toml for every key.";

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `datanexus serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (see config/example.toml).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Load and validate the configuration (file, environment, flags), print a summary,
    /// and exit (0 when valid) without opening or binding anything.
    #[arg(long)]
    pub(crate) check_config: bool,
    /// Directory of the embedded log and store [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051]; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub(crate) grpc_addr: Option<SocketAddr>,
    /// HTTP listen address [default: 127.0.0.1:8080]; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub(crate) http_addr: Option<SocketAddr>,
    /// Bearer token clients must present (repeatable). Without any, auth is off.
    #[arg(long = "auth-token", value_name = "TOKEN")]
    pub(crate) auth_tokens: Vec<String>,
    /// Allow binding a non-loopback address without auth tokens.
    #[arg(long)]
    pub(crate) insecure: bool,
    /// Log filter, e.g. `info` or `datanexus=debug,info` [default: info].
    #[arg(long, value_name = "FILTER")]
    pub(crate) log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub(crate) log_format: Option<LogFormatArg>,
    /// What this process runs: all, gateway, processor, store or control [env:
    /// DATANEXUS_ROLE].
    #[arg(long, value_name = "ROLE")]
    pub(crate) role: Option<datanexus_config::Role>,
    /// The broker: `redis://…` / `rediss://…` (Redis Streams) or `kafka://host:port,…`
    /// [env: DATANEXUS_BROKER__URL for redis].
    #[arg(long, value_name = "URL")]
    pub(crate) broker: Option<String>,
    /// Redis for the result fan-out between separate gateways (default: the redis
    /// broker's URL) [env: DATANEXUS_REDIS__URL].
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// The store: `embedded` (Parquet files in the data directory), a
    /// `postgres://user:password@host:port/db` URL, or `postgres` to build the URL from
    /// POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB
    /// [env: DATANEXUS_STORE__KIND, DATANEXUS_STORE__URL].
    #[arg(long, value_name = "URL")]
    pub(crate) store: Option<String>,
    /// Serve gRPC and HTTP over TLS with this PEM certificate chain (with --tls-key)
    /// [env: DATANEXUS_TLS__CERT].
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert [env: DATANEXUS_TLS__KEY].
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by the CAs in this PEM file (mutual TLS)
    /// [env: DATANEXUS_TLS__CLIENT_CA].
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_client_ca: Option<std::path::PathBuf>,
    /// The worker nodes of `--role control`, comma-separated HTTP base URLs in placement
    /// order, e.g. `http://10.0.0.2:8080,http://10.0.0.3:8080` [env:
    /// DATANEXUS_CONTROL__NODES].
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub(crate) nodes: Vec<String>,
}

/// Flags of `datanexus export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// A connection registered with the server using --data-dir (its id), or a URL:
    /// `postgres://user@host:5432/db` or an InfluxDB 1.x `http://host:8086`.
    #[arg(long, value_name = "ID|URL")]
    pub(crate) connection: String,
    /// The table (PostgreSQL, `schema.table` too) or measurement (InfluxDB).
    #[arg(long)]
    pub(crate) table: String,
    /// The database (InfluxDB; PostgreSQL: the connection's by default).
    #[arg(long)]
    pub(crate) database: Option<String>,
    /// PostgreSQL: the time column (default: the only timestamp column, or `time`).
    #[arg(long, value_name = "COLUMN")]
    pub(crate) time_column: Option<String>,
    /// First time exported (RFC 3339 or Unix seconds) [default: the first row's].
    #[arg(long, value_name = "TIME")]
    pub(crate) start: Option<String>,
    /// Last time exported, included [default: the last row's].
    #[arg(long, value_name = "TIME")]
    pub(crate) end: Option<String>,
    /// Where to: `kafka://host:port[,host:port]/topic` (the topic must exist) or a file
    /// (`.parquet`, `.csv`, `.ndjson`/`.jsonl`).
    #[arg(long, value_name = "kafka://BROKERS/TOPIC|FILE")]
    pub(crate) to: String,
    /// Kafka record format: `json` or `protobuf` (`datanexus.v1.PointRecord`); files:
    /// overrides the extension's.
    #[arg(long)]
    pub(crate) format: Option<String>,
    /// The user for a URL connection (the password is read from
    /// DATANEXUS_EXPORT_PASSWORD, never from the command line).
    #[arg(long)]
    pub(crate) username: Option<String>,
    /// Chunks the range is split into (`[jobs] divided_jobs`).
    #[arg(long, default_value_t = 48)]
    pub(crate) divided_jobs: usize,
    /// Chunks read at once (`[jobs] worker_num`).
    #[arg(long, default_value_t = 6)]
    pub(crate) workers: usize,
    /// Attempts after the first for a failed chunk.
    #[arg(long, default_value_t = 3)]
    pub(crate) retries: u32,
    /// Data directory of the server whose registered connections --connection names.
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub(crate) data_dir: PathBuf,
}

/// Flags of `datanexus export-consume`.
#[cfg(feature = "kafka")]
#[derive(Debug, Args)]
pub(crate) struct ExportConsumeArgs {
    /// Comma-separated `host:port` Kafka brokers.
    #[arg(long, value_name = "BROKERS")]
    pub(crate) bootstrap_servers: String,
    /// The consumer group (its committed offsets say where to resume).
    #[arg(long)]
    pub(crate) group: String,
    /// The topic.
    #[arg(long)]
    pub(crate) topic: String,
    /// Records handled at once (concurrent HTTP calls).
    #[arg(long, default_value_t = 4)]
    pub(crate) workers: usize,
    /// Call this URL per record (`POST`, the record's value as the body); `{key}`,
    /// `{partition}`, `{offset}` and `{timestamp}` (ms) are replaced, percent-encoded.
    /// Without it the records are printed as JSON lines.
    #[arg(long, value_name = "URL")]
    pub(crate) http_url_fmt: Option<String>,
    /// Attempts after the first for a failed call (with backoff); a call that still
    /// fails stops the consumer without committing its record.
    #[arg(long, default_value_t = 3)]
    pub(crate) retries: u32,
    /// Stop after this many records (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub(crate) limit: Option<u64>,
    /// Stop after this long without a record (default: never).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) idle_timeout: Option<std::time::Duration>,
}

/// Flags of `datanexus consume`.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// Data directory of a (stopped) `datanexus serve`.
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub(crate) data_dir: PathBuf,
    /// Topic to read.
    #[arg(long, default_value = "metrics")]
    pub(crate) topic: String,
    /// Only this partition (default: all).
    #[arg(long)]
    pub(crate) partition: Option<u32>,
    /// First offset to read in each partition.
    #[arg(long, default_value_t = 0)]
    pub(crate) from_offset: u64,
    /// Most records to print per partition.
    #[arg(long, default_value_t = u64::MAX)]
    pub(crate) limit: u64,
}

/// A load-generator workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// `data_nexus.MetricsService.IngestMetrics` batches over gRPC (`--grpc-addr`).
    GrpcBatch,
    /// `nimbus.NimbusService` bidi round trips (`--clients` streams, `--grpc-addr`).
    Stream,
    /// `POST /metrics` JSON arrays of `--batch` metrics (`--http-addr`).
    HttpJson,
    /// `POST /write?precision=ns` InfluxDB line protocol, `--batch` lines a request.
    LineProtocol,
    /// `POST /api/v1/write` Prometheus remote write (protobuf + snappy), `--batch`
    /// samples a request.
    RemoteWrite,
    /// `GET --query-path` repeatedly (`--queries` in all): query latency over data
    /// an ingest workload stored before.
    Query,
}

/// Output format of the result table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// An aligned text table.
    Table,
    /// One JSON object per measured run, one per line.
    Json,
}

const BENCH_HELP: &str = "\
The ingest workloads send --metrics samples of metric `bench` (`bench_metric` for
grpc-batch) spread over --series series (label series=s<N>, plus run=<id> naming the run),
--interval apart per series and ending now, --batch samples a request. HTTP bodies are
generated before the clock starts. Unless --no-verify, they then wait until a count query
on --http-addr (GET /metrics/<metric>/aggregate?label.run=<id>) sees every acknowledged
sample: ingest-to-queryable, timed from the first request.

Failed requests (non-2xx, gRPC or transport errors) are counted in the table, and the
command exits non-zero if any request or the ingest-to-queryable check failed.

Examples:
  datanexus bench --workload line-protocol --batch 5000 --metrics 1000000 --series 10000
  datanexus bench --workload query --queries 20 --clients 1
  datanexus bench --workload line-protocol --http-addr 127.0.0.1:8086 --db bench --no-verify --format json";

/// Flags of `datanexus bench`.
#[derive(Debug, Args)]
#[command(after_long_help = BENCH_HELP)]
pub(crate) struct BenchArgs {
    /// What to send.
    #[arg(long, value_enum, default_value = "grpc-batch")]
    pub(crate) workload: Workload,
    /// gRPC address of the server (grpc-batch, stream).
    #[arg(long, visible_alias = "addr", default_value = "127.0.0.1:50051")]
    pub(crate) grpc_addr: SocketAddr,
    /// HTTP address of the server: target of the HTTP workloads, and where every ingest
    /// workload counts its samples for ingest-to-queryable.
    #[arg(long, alias = "http", default_value = "127.0.0.1:8080")]
    pub(crate) http_addr: SocketAddr,
    /// Concurrent connections (streams, for `--workload stream`).
    #[arg(long, default_value_t = 4)]
    pub(crate) clients: u64,
    /// Samples per request.
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch: u64,
    /// Skip the ingest-to-queryable count (for servers other than Data Nexus).
    #[arg(long)]
    pub(crate) no_verify: bool,
    /// Give up waiting for ingest-to-queryable after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub(crate) verify_timeout: std::time::Duration,
    /// With `--workload stream`: first measure a bare tonic echo server in this process.
    #[arg(long)]
    pub(crate) echo: bool,
    /// Total samples (or stream events) to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) metrics: u64,
    /// Distinct series.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) series: u64,
    /// Time between two samples of one series (HTTP ingest workloads).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) interval: std::time::Duration,
    /// Stop after this long even if not all requests were sent (e.g. `30s`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub(crate) duration: std::time::Duration,
    /// With `--workload line-protocol`: add `db=<DB>` to the write path (InfluxDB 1.x).
    #[arg(long, value_name = "DB")]
    pub(crate) db: Option<String>,
    /// With `--workload query`: number of queries in all.
    #[arg(long, default_value_t = 100)]
    pub(crate) queries: u64,
    /// With `--workload query`: the path and query string to GET (URL-encoded).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/metrics/bench/aggregate?quantiles=0.95,0.999"
    )]
    pub(crate) query_path: String,
    /// Result format on stdout (progress goes to stderr).
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: OutputFormat,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn repeatable_auth_tokens_are_collected() {
        let cli = Cli::try_parse_from([
            "datanexus",
            "serve",
            "--auth-token",
            "a",
            "--auth-token",
            "b",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.auth_tokens, ["a", "b"]);
    }
}
