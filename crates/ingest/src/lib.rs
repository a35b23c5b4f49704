//! Every decoder of untrusted ingest bytes, without any transport: JSON bodies
//! (`POST /metrics`, `POST /ingest`), InfluxDB line protocol (`POST /write`),
//! Prometheus remote write (`POST /api/v1/write`) and the seed gRPC messages
//! (`data_nexus.MetricsService`, `raftmetrics.v1.MetricsService`, after tonic decoded
//! them). The HTTP and gRPC handlers of `datanexus-server` call these functions —
//! through the constants of [`endpoint`] — and nothing else to turn a request into
//! points or events, and the fuzz targets in `fuzz/` call the same constants, so what
//! is fuzzed is what is served.
//!
//! Every function validates completely (names, labels, values, timestamps, batch
//! sizes): what it returns is ready to append to the broker.
//!
//! # Layout
//! - [`json`]: the JSON bodies (one object or an array).
//! - [`lineproto`]: line protocol bodies (the parser itself is `datanexus_model::lineproto`).
//! - [`remote_write`]: snappy + `prometheus.WriteRequest`, with the metadata it announces.
//! - [`seed`]: the seed gRPC messages.
//! - [`stream`]: stream requests (client id, the event a request becomes).
//! - `convert.rs`: what they share (one-sample points, batch checks, JSON timestamps).
//! - `error.rs`: [`Error`].

mod convert;
pub mod endpoint;
pub mod error;
pub mod json;
pub mod lineproto;
pub mod remote_write;
pub mod seed;
pub mod stream;

pub use convert::JsonTimestamp;
pub use error::{Error, Result};
