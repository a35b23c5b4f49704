//! [`ServerOptions`]: exactly what the front ends need, decoupled from the config file
//! layout (built from a [`datanexus_config::Config`] with `From`).

use std::path::PathBuf;
use std::time::Duration;

use datanexus_config::Config;
use datanexus_model::Limits;

/// Names of the broker topics the server writes to (they are created by
/// `datanexus_pipeline::ensure_topology` before the server starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    /// Ingested metric points.
    pub metrics: String,
    /// Ingested events.
    pub events: String,
    /// Processed results (written by the pipeline).
    pub results: String,
    /// Dead letters (written by the pipeline).
    pub dlq: String,
}

/// Options of the gRPC and HTTP front ends.
#[derive(Clone, PartialEq)]
pub struct ServerOptions {
    /// Accepted bearer tokens with their scopes; empty disables authentication.
    pub auth_tokens: Vec<datanexus_config::TokenConfig>,
    /// TLS of both servers (off when `tls.cert` is empty).
    pub tls: datanexus_config::TlsConfig,
    /// Topic names.
    pub topics: TopicNames,
    /// Name, label and value limits applied to every point.
    pub limits: Limits,
    /// Largest HTTP request body, in bytes, after decompression (default 16 MiB).
    pub max_http_body_bytes: usize,
    /// Largest decoded gRPC message, in bytes (default 16 MiB; tonic's own default is
    /// 4 MiB, too small for 50 000-metric batches).
    pub max_grpc_message_bytes: usize,
    /// Most metrics in one ingest batch.
    pub max_batch_metrics: usize,
    /// Most events in one `POST /ingest` body.
    pub max_batch_events: usize,
    /// Backpressure budget: records accepted but not yet durable. A request that does
    /// not fit is refused (`429` / `RESOURCE_EXHAUSTED`), never queued.
    pub max_inflight_records: usize,
    /// `limits.max_inflight_bytes`: the byte budget of request bodies and messages.
    pub max_inflight_bytes: usize,
    /// Deadline of one API request.
    pub request_timeout: Duration,
    /// `limits.header_read_timeout`: HTTP/1.1 request headers must arrive within it.
    pub header_read_timeout: Duration,
    /// Most API requests (HTTP and gRPC together) served at once; more are refused.
    pub max_concurrent_requests: usize,
    /// How long [`run`](crate::run) waits for in-flight requests after shutdown begins.
    pub shutdown_timeout: Duration,
    /// Upper bounds (`le`) of the buckets of histogram-typed metrics in `GET /metrics`,
    /// finite and strictly ascending (`+Inf` is implicit).
    pub histogram_buckets: Vec<f64>,
    /// Consumer group of `GET /metrics?drain=true` on the metrics topic.
    pub drain_group: String,
    /// Where the client event streams' cursors are persisted (`cursors.log`, a journal); `None`
    /// keeps them in memory only. From a config: `<data_dir>/sessions`.
    pub state_dir: Option<PathBuf>,
    /// Where registered database connections are kept (`POST /db-connections/register`);
    /// `None` keeps them in memory only. From a config: `<data_dir>/connections.json`.
    pub connections_file: Option<PathBuf>,
    /// How export jobs run; from a config: files in `<data_dir>/exports`, `[jobs]`.
    pub exports: datanexus_export::ExportOptions,
    /// Most stored results replayed to a reconnecting stream client (the newest are
    /// kept); 0 disables replay.
    pub max_replay_results: usize,
    /// Results older than this are not replayed to a reconnecting stream client.
    pub max_replay_age: Duration,
    /// Items buffered per connected stream before its client counts as slow.
    pub stream_channel_capacity: usize,
    /// How long routing waits for room in a slow client's full buffer before it
    /// disconnects the stream with `RESOURCE_EXHAUSTED`.
    pub slow_client_timeout: Duration,
    /// Where the pipeline sends the results of this process's stream events: stored in
    /// each event's `reply_to` (`local` in one process; the gateway's Redis channel
    /// when gateways are separate processes).
    pub reply_to: String,
}

/// Default [`ServerOptions::reply_to`]: results are routed within this process.
pub const LOCAL_REPLY_TO: &str = "local";

impl std::fmt::Debug for ServerOptions {
    /// Never prints the tokens, only how many there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field(
                "auth_tokens",
                &format_args!("<{} redacted>", self.auth_tokens.len()),
            )
            .field("tls", &self.tls)
            .field("topics", &self.topics)
            .field("limits", &self.limits)
            .field("max_http_body_bytes", &self.max_http_body_bytes)
            .field("max_grpc_message_bytes", &self.max_grpc_message_bytes)
            .field("max_batch_metrics", &self.max_batch_metrics)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_inflight_records", &self.max_inflight_records)
            .field("max_inflight_bytes", &self.max_inflight_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("histogram_buckets", &self.histogram_buckets)
            .field("drain_group", &self.drain_group)
            .field("state_dir", &self.state_dir)
            .field("connections_file", &self.connections_file)
            .field("exports", &self.exports)
            .field("max_replay_results", &self.max_replay_results)
            .field("max_replay_age", &self.max_replay_age)
            .field("stream_channel_capacity", &self.stream_channel_capacity)
            .field("slow_client_timeout", &self.slow_client_timeout)
            .field("reply_to", &self.reply_to)
            .finish()
    }
}

impl From<&Config> for ServerOptions {
    /// Everything from the configuration (whose defaults are the only defaults); the
    /// cursors live in `<data_dir>/sessions`, results are routed in this process.
    fn from(c: &Config) -> Self {
        ServerOptions {
            auth_tokens: c.auth.tokens.clone(),
            tls: c.tls.clone(),
            topics: TopicNames {
                metrics: c.topics.metrics.clone(),
                events: c.topics.events.clone(),
                results: c.topics.results.clone(),
                dlq: c.topics.dlq.clone(),
            },
            limits: Limits {
                max_labels: c.metrics.max_labels,
                max_label_value_bytes: c.metrics.max_label_value_bytes,
                max_name_bytes: c.metrics.max_name_bytes,
            },
            max_http_body_bytes: c.limits.max_http_body_bytes,
            max_grpc_message_bytes: c.limits.max_grpc_message_bytes,
            max_batch_metrics: c.limits.max_batch_metrics,
            max_batch_events: c.limits.max_batch_events,
            max_inflight_records: c.limits.max_inflight_records,
            max_inflight_bytes: c.limits.max_inflight_bytes,
            request_timeout: c.limits.request_timeout,
            header_read_timeout: c.limits.header_read_timeout,
            max_concurrent_requests: c.limits.max_concurrent_requests,
            shutdown_timeout: c.shutdown_timeout,
            histogram_buckets: c.metrics.histogram_buckets.clone(),
            drain_group: c.groups.drain.clone(),
            state_dir: Some(c.data_dir.join("sessions")),
            connections_file: Some(c.data_dir.join("connections.json")),
            exports: datanexus_export::ExportOptions {
                dir: Some(c.data_dir.join("exports")),
                divided_jobs: c.jobs.divided_jobs,
                worker_num: c.jobs.worker_num,
                retries: c.jobs.retries,
                ..datanexus_export::ExportOptions::default()
            },
            max_replay_results: c.streams.max_replay_results,
            max_replay_age: c.streams.max_replay_age,
            stream_channel_capacity: c.streams.channel_capacity,
            slow_client_timeout: c.streams.slow_client_timeout,
            reply_to: LOCAL_REPLY_TO.to_owned(),
        }
    }
}

impl ServerOptions {
    /// The settings of the client-stream registry.
    pub fn session_options(&self) -> datanexus_results::SessionOptions {
        datanexus_results::SessionOptions {
            state_dir: self.state_dir.clone(),
            max_replay_results: self.max_replay_results,
            max_replay_age: self.max_replay_age,
            channel_capacity: self.stream_channel_capacity,
            slow_client_timeout: self.slow_client_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_tokens() {
        let options = ServerOptions {
            auth_tokens: vec!["s3cret".into()],
            ..ServerOptions::from(&Config::default())
        };
        let text = format!("{options:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<1 redacted>"), "{text}");
    }
}
