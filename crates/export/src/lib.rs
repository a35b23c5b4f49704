//! The export side of Data Nexus (the large-dataset-delivery seed): database connections
//! registered at run time and persisted, and what a connection can be asked (is it
//! reachable, with these credentials).
//!
//! # Layout
//! - [`connections`]: the connection spec of `POST /db-connections/register`, its
//!   validation, the public (secret-free) view, and [`Connections`], the registry kept
//!   in a file of the data directory (mode 0600, replaced atomically).
//! - `source.rs` (+ `source/`): the datasets jobs read ([`Source`]): PostgreSQL tables,
//!   InfluxDB measurements, the own store's measurements, as rows of a [`Schema`].
//! - `files.rs`: NDJSON, CSV and Parquet files, written by parts and joined.
//! - `sink.rs`: where rows go ([`Target`]: a file or a Kafka topic), rows as Kafka
//!   records (`datanexus.v1.PointRecord` or JSON), the Kafka producer (feature `kafka`).
//! - `job.rs`: [`Exports`], the jobs: chunks, workers, retries, progress, cancel.
//! - [`browse`]: a connection's datasets, their columns and time range, and their
//!   rows by time, paged.
//! - `ping.rs`: reaching a connection's database (PostgreSQL: a login and `SELECT 1`;
//!   InfluxDB 1.x: `/ping` and `SHOW DATABASES` with the credentials; `datanexus`: this
//!   process's own store).
//! - `influx.rs`: the small InfluxDB 1.x HTTP client.
//! - `error.rs`: [`Error`].
//! - `tests.rs`: against a real `influxd` started by the test (authentication on).
//!
//! # Invariants
//! - Secrets (passwords, tokens, the password inside a URL) are never returned by the
//!   API, never written to the log and never printed by `Debug`; on disk they are in a
//!   file only its owner can read.
//! - A connection is in the registry only if its database answered when it was
//!   registered, and only once it is on disk: a registration that answers `201`
//!   survives a crash.

pub mod browse;
pub mod connections;
mod error;
mod files;
mod influx;
mod job;
mod ping;
mod sink;
pub mod source;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use connections::{ConnectionInfo, ConnectionSpec, Connections, DbType};
pub use error::{Error, Result};
pub use files::FileFormat;
pub use job::{ExportOptions, ExportRequest, Exports, JobState, JobStatus};
pub use ping::ping;
pub use sink::{KafkaTarget, MessageFormat, Target};
pub use source::{DatasetRef, Schema, Source};
