//! The decoder of each ingest endpoint, one constant each. The HTTP and gRPC handlers
//! call these constants, and so do the fuzz targets in `fuzz/`: the compiler ties what
//! is fuzzed to what is served (a handler that switched to another decoder would no
//! longer use the constant its fuzz target exercises).

use datanexus_model::lineproto::Precision;
use datanexus_model::{Event, Limits, Point};
use datanexus_proto::data_nexus::Metric;
use datanexus_proto::raftmetrics::v1::MetricEntry;

use crate::json::{self, Decoded};
use crate::remote_write::{self, AnnouncedMetadata};
use crate::{Result, lineproto, seed};

/// A JSON body decoder: body, limits, most items, receive time.
pub type JsonMetrics = fn(&[u8], &Limits, usize, i64) -> Result<Decoded<Point>>;
/// A JSON events decoder: body, most items, receive time.
pub type JsonEvents = fn(&[u8], usize, i64) -> Result<Decoded<Event>>;
/// A line protocol decoder: body, precision, limits, most lines, receive time.
pub type LineProtocol = fn(&[u8], Precision, &Limits, usize, i64) -> Result<Vec<Point>>;
/// A remote write decoder: body, most decompressed bytes, limits, remembered metadata,
/// most samples.
pub type RemoteWrite =
    fn(&[u8], usize, &Limits, &AnnouncedMetadata, usize) -> Result<remote_write::Decoded>;
/// A seed batch converter: messages, limits, most items, receive time.
pub type SeedBatch<M> = fn(Vec<M>, &Limits, usize, i64) -> Result<Vec<Point>>;
/// A seed message converter: message, receive time, limits.
pub type SeedOne<M> = fn(M, i64, &Limits) -> Result<Point>;

/// `POST /metrics` (fuzz target `http_json`).
pub const POST_METRICS: JsonMetrics = json::metrics;

/// `POST /ingest` (fuzz target `http_json`).
pub const POST_INGEST: JsonEvents = json::events;

/// `POST /write` and `POST /api/v2/write` (fuzz target `line_protocol`).
pub const POST_WRITE: LineProtocol = lineproto::points;

/// `POST /api/v1/write` (fuzz target `remote_write`).
pub const POST_REMOTE_WRITE: RemoteWrite = remote_write::decode_request;

/// `data_nexus.MetricsService/IngestMetrics` (fuzz target `grpc_metrics`, after prost
/// decoded the message as tonic does).
pub const INGEST_METRICS: SeedBatch<Metric> = seed::data_nexus_batch;

/// `data_nexus.MetricsService/IngestMetric`.
pub const INGEST_METRIC: SeedOne<Metric> = seed::data_nexus_metric;

/// `raftmetrics.v1.MetricsService/BatchSendMetrics` (fuzz target `grpc_raftmetrics`,
/// after prost decoded the message as tonic does).
pub const BATCH_SEND_METRICS: SeedBatch<MetricEntry> = seed::raftmetrics_batch;

/// `raftmetrics.v1.MetricsService/SendMetric`.
pub const SEND_METRIC: SeedOne<MetricEntry> = seed::raftmetrics_entry;
