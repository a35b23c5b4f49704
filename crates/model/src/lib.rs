//! The data model of Data Nexus: what a point, a series, a metric type and an event are,
//! how they are validated, how they are encoded on broker topics, and how series are
//! partitioned.
//!
//! # Layout
//! - [`point`]: [`Point`], [`FieldValue`], [`Labels`] (the Influx line-protocol model).
//! - [`metric`]: [`MetricType`] (counter | gauge | histogram | summary | untyped).
//! - [`series`]: stable 64-bit series ids (xxh3) and [`jump_hash`] partitioning.
//! - [`event`]: [`Event`] (`source_id`, timestamp, JSON object payload).
//! - [`lineproto`]: the InfluxDB line-protocol parser ([`lineproto::parse`]).
//! - [`validate`]: name, label, value and size rules ([`Limits`]).
//! - [`time`]: timestamp parsing (RFC 3339 or Unix seconds) and the clock.
//! - [`codec`]: topic record encodings (`datanexus.v1.PointRecord` / `EventRecord`).
//! - [`error`]: the crate's [`Error`] type.

pub mod codec;
pub mod error;
pub mod event;
pub mod lineproto;
pub mod metric;
pub mod point;
pub mod series;
pub mod time;
pub mod validate;

pub use error::{Error, Result};
pub use event::{Event, StreamEvent};
pub use metric::MetricType;
pub use point::{FieldValue, Labels, Point};
pub use series::{jump_hash, series_id};
pub use validate::Limits;
