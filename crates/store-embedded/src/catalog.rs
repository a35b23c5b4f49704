//! The in-memory series catalog: keys, measurement metadata and per-series statistics
//! of the flushed files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datanexus_model::MetricType;
use serde::{Deserialize, Serialize};

use datanexus_store::{Selector, SeriesKey};

/// Metadata of a measurement (metric family), persisted in the manifest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct MeasurementMeta {
    /// Metric type of the latest write.
    pub(crate) kind: MetricType,
    /// Latest help text sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) help: Option<String>,
}

/// Exact statistics of one series over the live files (duplicates across files counted
/// once, the newest file's value winning).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FileStats {
    /// Distinct timestamps.
    pub(crate) count: u64,
    /// Smallest timestamp.
    pub(crate) first_ns: i64,
    /// Greatest timestamp.
    pub(crate) last_ns: i64,
    /// Value at `last_ns`.
    pub(crate) last_value: f64,
}

/// One series.
#[derive(Debug, Clone)]
pub(crate) struct SeriesEntry {
    /// Its key.
    pub(crate) key: Arc<SeriesKey>,
    /// Statistics over the files; `None` while it lives only in the head.
    pub(crate) files: Option<FileStats>,
}

/// Series and measurements known to the store.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    /// By series id.
    pub(crate) series: HashMap<u64, SeriesEntry>,
    /// Measurement name → metadata.
    pub(crate) measurements: BTreeMap<String, MeasurementMeta>,
    /// Measurement name → its series ids.
    pub(crate) members: HashMap<String, BTreeSet<u64>>,
}

impl Catalog {
    /// Registers `key` under `id` unless known.
    pub(crate) fn ensure_series(&mut self, id: u64, key: impl FnOnce() -> SeriesKey) {
        if self.series.contains_key(&id) {
            return;
        }
        let key = Arc::new(key());
        self.members
            .entry(key.measurement.clone())
            .or_default()
            .insert(id);
        self.series.insert(id, SeriesEntry { key, files: None });
    }

    /// Records the kind and help text of the latest write to `measurement`.
    pub(crate) fn note_meta(&mut self, measurement: &str, kind: MetricType, help: Option<&str>) {
        match self.measurements.get_mut(measurement) {
            Some(m) => {
                m.kind = kind;
                if let Some(h) = help
                    && m.help.as_deref() != Some(h)
                {
                    m.help = Some(h.to_owned());
                }
            }
            None => {
                let meta = MeasurementMeta {
                    kind,
                    help: help.map(str::to_owned),
                };
                self.measurements.insert(measurement.to_owned(), meta);
            }
        }
    }

    /// Forgets a series.
    pub(crate) fn remove_series(&mut self, id: u64) {
        let Some(entry) = self.series.remove(&id) else {
            return;
        };
        if let Some(set) = self.members.get_mut(&entry.key.measurement) {
            set.remove(&id);
            if set.is_empty() {
                self.members.remove(&entry.key.measurement);
            }
        }
    }

    /// Whether any series of `measurement` is stored.
    pub(crate) fn has_measurement(&self, measurement: &str) -> bool {
        self.members.get(measurement).is_some_and(|s| !s.is_empty())
    }

    /// The series selected by `selector`, sorted by key.
    pub(crate) fn select(&self, selector: &Selector) -> Vec<(u64, Arc<SeriesKey>)> {
        let Some(ids) = self.members.get(&selector.measurement) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, Arc<SeriesKey>)> = ids
            .iter()
            .filter_map(|id| self.series.get(id).map(|e| (*id, Arc::clone(&e.key))))
            .filter(|(_, key)| selector.matches(key))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// Metadata of `measurement` (defaults when never written).
    pub(crate) fn meta(&self, measurement: &str) -> MeasurementMeta {
        self.measurements
            .get(measurement)
            .cloned()
            .unwrap_or_default()
    }
}

/// Which series a read wants.
#[derive(Debug, Clone)]
pub(crate) enum SeriesFilter {
    /// Every series.
    All,
    /// These ids (sorted, unique).
    Ids(Vec<u64>),
}

impl SeriesFilter {
    /// A filter of `ids` in any order.
    pub(crate) fn ids(ids: impl IntoIterator<Item = u64>) -> Self {
        let mut v: Vec<u64> = ids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        SeriesFilter::Ids(v)
    }

    /// Whether `id` is wanted.
    pub(crate) fn contains(&self, id: u64) -> bool {
        match self {
            SeriesFilter::All => true,
            SeriesFilter::Ids(v) => v.binary_search(&id).is_ok(),
        }
    }

    /// Whether any wanted id lies in `lo..=hi`.
    pub(crate) fn any_in(&self, lo: u64, hi: u64) -> bool {
        match self {
            SeriesFilter::All => true,
            SeriesFilter::Ids(v) => v
                .get(v.partition_point(|&x| x < lo))
                .is_some_and(|&x| x <= hi),
        }
    }
}
