//! The store API of Data Nexus — where points and events rest and are queried: the
//! [`Store`] trait, its query and result types, the aggregate semantics every backend
//! shares, and the conformance suite. No engine lives here (no file format, no database
//! driver), so the crates that only call a store (server, pipeline, fan-out) do not
//! compile one; the engines are `datanexus-store-embedded` (Apache Parquet) and
//! `datanexus-store-postgres`.
//!
//! Contract (every backend, checked by the conformance suite):
//! - writes are idempotent: points on (series, timestamp) — a rewrite replaces the value,
//!   never adds a sample — and events on their id (the broker record id), so a redelivered
//!   batch never double-counts;
//! - what was written is visible to queries at once; it is *durable* only after
//!   [`Store::flush`] returned (the sinker acknowledges broker records only then);
//! - queries default to all stored data when no time range is given; ranges are inclusive
//!   at both ends, in nanoseconds since the Unix epoch;
//! - only numeric fields are stored as samples (f64; integers and booleans are converted;
//!   string fields are not stored as samples);
//! - NaN samples are stored and returned, and skipped by every aggregate;
//! - stream results are a record of their own ([`StoredResult`]), idempotent on
//!   (client, seq) and read back by an index on it ([`Store::results`]).
//!
//! # Layout
//! - this file: [`Store`] and the query/result types.
//! - [`aggregate`]: the one implementation of count/sum/mean/min/max/quantiles/buckets that
//!   every backend uses, so results agree across backends.
//! - [`error`]: the crate's [`Error`] type.
//! - `conformance` (feature `conformance`, for the engines' tests): the suite every
//!   backend must pass.

use async_trait::async_trait;
use datanexus_model::{Labels, MetricType, Point};
use serde_json::{Map, Value};

pub mod aggregate;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod scatter;

pub use aggregate::{Aggregate, AggregateParts, Summary};
pub use error::{Error, Result};

/// Identity of a series: measurement + field + labels.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SeriesKey {
    /// Metric (measurement) name.
    pub measurement: String,
    /// Field name (`value` for plain metric samples).
    pub field: String,
    /// Sorted labels.
    pub labels: Labels,
}

impl SeriesKey {
    /// The stable series id (xxh3), see `datanexus_model::series_id`.
    pub fn id(&self) -> u64 {
        datanexus_model::series_id(&self.measurement, &self.field, &self.labels)
    }
}

/// One sample. Serialized as `[timestamp_ns, value bits]` (the value's IEEE 754 bits
/// as an integer: exact, and NaN and infinities survive JSON).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "(i64, u64)", into = "(i64, u64)")]
pub struct Sample {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The value.
    pub value: f64,
}

impl From<(i64, u64)> for Sample {
    fn from((timestamp_ns, bits): (i64, u64)) -> Self {
        Sample {
            timestamp_ns,
            value: f64::from_bits(bits),
        }
    }
}

impl From<Sample> for (i64, u64) {
    fn from(s: Sample) -> Self {
        (s.timestamp_ns, s.value.to_bits())
    }
}

/// An inclusive time range; `None` ends are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeRange {
    /// First nanosecond included.
    pub start_ns: Option<i64>,
    /// Last nanosecond included.
    pub end_ns: Option<i64>,
}

impl TimeRange {
    /// Whether `ts` lies in the range.
    pub fn contains(&self, ts: i64) -> bool {
        self.start_ns.is_none_or(|s| ts >= s) && self.end_ns.is_none_or(|e| ts <= e)
    }
}

/// Which series of a measurement: field plus label equality matchers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selector {
    /// Metric (measurement) name.
    pub measurement: String,
    /// Field (`value` by default).
    pub field: String,
    /// Every `(name, value)` must equal the series' label.
    pub matchers: Vec<(String, String)>,
}

impl Selector {
    /// All series of `measurement`'s `value` field.
    pub fn metric(measurement: impl Into<String>) -> Self {
        Selector {
            measurement: measurement.into(),
            field: "value".into(),
            matchers: Vec::new(),
        }
    }

    /// Whether `key` is selected.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        key.measurement == self.measurement
            && key.field == self.field
            && self
                .matchers
                .iter()
                .all(|(k, v)| key.labels.get(k) == Some(v.as_str()))
    }
}

/// Raw samples of selected series.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeriesQuery {
    /// Which series.
    pub selector: Selector,
    /// Which time range.
    pub range: TimeRange,
    /// Most samples returned (over all series, after `offset`), in time order.
    pub limit: usize,
    /// Samples skipped first.
    pub offset: usize,
}

/// Samples of one series.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeriesSamples {
    /// The series.
    pub key: SeriesKey,
    /// Samples in ascending time order.
    pub samples: Vec<Sample>,
}

/// Result of a [`SeriesQuery`]: samples ordered by (timestamp, series key), paged.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct QueryResult {
    /// Each returned sample with the index of its series in `series`.
    pub samples: Vec<(usize, Sample)>,
    /// The series the samples belong to.
    pub series: Vec<SeriesKey>,
    /// Samples matching before paging.
    pub total: u64,
}

impl QueryResult {
    /// A page from the picked samples, each with the index of its series among all the
    /// selected series (`key(i)`, in key order), keeping only the series that appear
    /// on the page.
    pub fn from_picked(
        picked: Vec<(usize, Sample)>,
        key: impl Fn(usize) -> Option<SeriesKey>,
        total: u64,
    ) -> Self {
        let used: std::collections::BTreeSet<usize> = picked.iter().map(|(i, _)| *i).collect();
        let remap: std::collections::HashMap<usize, usize> = used
            .iter()
            .enumerate()
            .map(|(new, old)| (*old, new))
            .collect();
        QueryResult {
            samples: picked
                .into_iter()
                .map(|(i, s)| (remap.get(&i).copied().unwrap_or(0), s))
                .collect(),
            series: used.iter().filter_map(|i| key(*i)).collect(),
            total,
        }
    }
}

/// An aggregate over selected series and a time range, optionally per time step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AggregateQuery {
    /// Which series.
    pub selector: Selector,
    /// Which time range.
    pub range: TimeRange,
    /// Bucket width for per-step results (what a chart needs); `None` = one total only.
    pub step_ns: Option<i64>,
    /// Quantiles to compute, each in `0..=1` (serialized as IEEE 754 bits: exact).
    #[serde(with = "f64_bits")]
    pub quantiles: Vec<f64>,
    /// Histogram upper bounds (`le`), ascending; counts are cumulative (serialized as
    /// IEEE 754 bits).
    #[serde(with = "f64_bits")]
    pub buckets: Vec<f64>,
}

/// Floats as their IEEE 754 bits (integers), so that they cross JSON exactly.
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|f| f.to_bits())
            .collect::<Vec<u64>>()
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(f64::from_bits)
            .collect())
    }
}

/// Result of an [`AggregateQuery`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AggregateResult {
    /// Over the whole range.
    pub total: Summary,
    /// Per step: (bucket start ns, summary), ascending, empty buckets omitted.
    pub steps: Vec<(i64, Summary)>,
    /// Series that matched.
    pub series_count: u64,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// Unique id (the broker record id): writes are idempotent on it.
    pub id: String,
    /// Source.
    pub source_id: String,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The JSON object payload.
    pub payload: Map<String, Value>,
}

/// Which events.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct EventQuery {
    /// Only this source.
    pub source_id: Option<String>,
    /// Only this time range.
    pub range: TimeRange,
    /// Most events returned.
    pub limit: usize,
    /// Events skipped first.
    pub offset: usize,
}

/// A page of events, oldest first (newest last).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct EventPage {
    /// Events matching before paging.
    pub total: u64,
    /// The page.
    pub events: Vec<StoredEvent>,
}

/// What a processor answered to a stream event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// The computed value.
    Value(i32),
    /// Why there is no value (unknown processor, overflow, …).
    Error(String),
}

/// The result of a stream event, as stored for replay to its client. Writes are
/// idempotent on (`client_id`, `seq`): a rewrite replaces the row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredResult {
    /// The client whose stream sent the event.
    pub client_id: String,
    /// The result's sequence number: strictly increasing per client (the event's
    /// position in the events topic plus one).
    pub seq: u64,
    /// The event's partition in the events topic.
    pub event_partition: u32,
    /// The event's offset in that partition.
    pub event_offset: u64,
    /// The processor the event named.
    pub event_name: String,
    /// The event's number.
    pub number: i32,
    /// The answer.
    pub outcome: Outcome,
    /// When the gateway received the event (ns since the Unix epoch).
    pub received_ns: i64,
    /// When the processor answered (ns since the Unix epoch); retention ages results
    /// by it.
    pub processed_ns: i64,
    /// Which processor answered.
    pub processor_id: String,
}

/// The results of one client above a sequence number: the replay of a reconnecting
/// stream. A backend answers it by an index on (client, seq), reading about what it
/// returns, whatever the client's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResultQuery {
    /// The client.
    pub client_id: String,
    /// Only results with a greater seq.
    pub after_seq: u64,
    /// Most results returned: the newest ones.
    pub limit: usize,
}

/// The answer to a [`ResultQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ResultPage {
    /// The newest `limit` results above `after_seq`, in seq order.
    pub results: Vec<StoredResult>,
    /// Results above `after_seq`, returned or not.
    pub total: u64,
    /// Result rows the backend read to answer (what the index saved is visible here).
    pub rows_read: u64,
}

/// What the store knows about one measurement.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatasetInfo {
    /// Measurement (metric) name.
    pub measurement: String,
    /// Metric type (of the latest write).
    pub kind: MetricType,
    /// Help text, if any.
    pub help: Option<String>,
    /// Field names, sorted.
    pub fields: Vec<String>,
    /// Label names, sorted.
    pub label_names: Vec<String>,
    /// Number of series (field × label sets).
    pub series_count: u64,
    /// Number of samples.
    pub sample_count: u64,
    /// First sample's timestamp (ns).
    pub first_ns: i64,
    /// Last sample's timestamp (ns).
    pub last_ns: i64,
}

/// The latest sample of a series, with its metadata (for exposition).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latest {
    /// The series.
    pub key: SeriesKey,
    /// Metric type.
    pub kind: MetricType,
    /// Help text.
    pub help: Option<String>,
    /// The sample with the greatest timestamp.
    pub sample: Sample,
}

/// What a flush made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushReport {
    /// Rows written to new files.
    pub rows: u64,
    /// Bytes of new files.
    pub bytes: u64,
}

/// Where points and events rest.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name (`embedded`, `postgres`).
    fn name(&self) -> &'static str;

    /// Writes points (idempotent on series + timestamp). Visible at once; durable after
    /// [`Store::flush`].
    ///
    /// # Errors
    /// Backend failures.
    async fn write_points(&self, points: &[Point]) -> Result<()>;

    /// Writes events (idempotent on id).
    ///
    /// # Errors
    /// Backend failures.
    async fn write_events(&self, events: &[StoredEvent]) -> Result<()>;

    /// Writes stream results (idempotent on client and seq). Visible at once; durable
    /// after [`Store::flush`].
    ///
    /// # Errors
    /// Backend failures.
    async fn write_results(&self, results: &[StoredResult]) -> Result<()>;

    /// Makes everything written so far durable.
    ///
    /// # Errors
    /// Backend failures; nothing written since the last successful flush may be assumed
    /// durable.
    async fn flush(&self) -> Result<FlushReport>;

    /// Raw samples.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown measurement.
    async fn query(&self, query: &SeriesQuery) -> Result<QueryResult>;

    /// Aggregates.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown measurement; [`Error::Invalid`] for a bad
    /// quantile or step.
    async fn aggregate(&self, query: &AggregateQuery) -> Result<AggregateResult>;

    /// The aggregate before it is finished, to be merged with other nodes' exactly (the
    /// control node's scatter-gather). The default reads the raw samples page by page;
    /// backends override it with their aggregate's own pass.
    ///
    /// # Errors
    /// As [`Store::aggregate`].
    async fn aggregate_parts(&self, query: &AggregateQuery) -> Result<AggregateParts> {
        aggregate::parts_from_samples(self, query).await
    }

    /// Deletes, for each `(series, up_to_ns)`, the series' samples with timestamps up to
    /// `up_to_ns` (inclusive), durably; returns how many samples were deleted. Newer
    /// samples stay. (The control node's rebalance: a series' old data is deleted from a
    /// node once its new owner holds it.)
    ///
    /// # Errors
    /// Backend failures; [`Error::Invalid`] from a backend that cannot delete.
    async fn delete_series(&self, series: &[(SeriesKey, i64)]) -> Result<u64> {
        let _ = series;
        Err(Error::Invalid(format!(
            "the {} store cannot delete series",
            self.name()
        )))
    }

    /// Stored events.
    ///
    /// # Errors
    /// Backend failures.
    async fn events(&self, query: &EventQuery) -> Result<EventPage>;

    /// The newest results of a client above a seq (see [`ResultQuery`]).
    ///
    /// # Errors
    /// Backend failures.
    async fn results(&self, query: &ResultQuery) -> Result<ResultPage>;

    /// Every measurement with its fields, labels, counts and time range, sorted by name.
    ///
    /// # Errors
    /// Backend failures.
    async fn datasets(&self) -> Result<Vec<DatasetInfo>>;

    /// The latest sample of every series, sorted by series key.
    ///
    /// # Errors
    /// Backend failures.
    async fn latest(&self) -> Result<Vec<Latest>>;

    /// Checks the store can serve reads and writes (for `/ready`).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it cannot be reached, [`Error::Closed`] after stop.
    async fn ready(&self) -> Result<()>;

    /// Applies retention by age.
    ///
    /// # Errors
    /// Backend failures.
    async fn enforce_retention(&self) -> Result<()>;

    /// Flushes and stops.
    ///
    /// # Errors
    /// If the final flush fails.
    async fn stop(&self) -> Result<()>;
}
