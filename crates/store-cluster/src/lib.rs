//! The control node's store: the [`Store`] API over worker nodes — ordinary `datanexus
//! serve` processes — reached over HTTP (the RaftMetrics seed's control node).
//!
//! - **Placement**: a point belongs to node `jump_hash(point_key(measurement, labels),
//!   n)` (all fields of a point on one node), an event to `jump_hash(xxh3(source_id),
//!   n)`, a stream result to `jump_hash(xxh3(client_id), n)`, over the node list in its
//!   order. Appending a node moves ~1/(n+1) of the keys.
//! - **Writes** are buffered per node by [`Store::write_points`] and friends and sent by
//!   [`Store::flush`]: one batch per node (split at [`MAX_BATCH_BYTES`]), all nodes at
//!   once; a node answers only once the batch is durable in its store, and the flush
//!   returns only when every node confirmed. A node that fails keeps its batches here and
//!   the flush fails; the caller (the sinker) retries with backoff and acknowledges
//!   nothing to the log meanwhile, so a node down for minutes loses nothing — the
//!   control node's durable log holds the backlog — and a batch sent twice is absorbed by
//!   the node's idempotent store. Flushes are serialized, so a flush that returns `Ok`
//!   means everything written before it is durable on its node.
//! - **Reads** are scattered to every node at once and merged: raw samples and events
//!   by an ordered merge (each node asked for `offset + limit`), aggregates from each
//!   node's exact [`AggregateParts`] (counts, exact sums, extremes, every value for
//!   quantiles, per step), datasets and latest samples by key. A node that fails or
//!   does not answer within the timeout fails the query naming it ([`Error::Unavailable`],
//!   HTTP 503) — unless the caller runs it inside [`scatter::allowing_partial`], which
//!   learns the missing nodes instead. A measurement unknown to every node is
//!   [`Error::NotFound`].
//!
//! # Layout
//! - this file: [`ClusterStore`], placement, the write buffers and the merges.
//! - [`node`]: one worker node: its HTTP client calls and its status.
//! - [`rebalance`]: moving the old data of series whose owner changed.
//! - [`wire`]: paths and the write batch format, shared with the nodes' handlers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datanexus_model::series::point_key;
use datanexus_model::{Point, jump_hash};
use datanexus_store::{
    AggregateParts, AggregateQuery, AggregateResult, DatasetInfo, EventPage, EventQuery,
    FlushReport, Latest, QueryResult, ResultPage, ResultQuery, SeriesKey, SeriesQuery, Store,
    StoredEvent, StoredResult, scatter,
};
use parking_lot::{Mutex, RwLock};

pub mod node;
pub mod rebalance;
pub mod wire;

pub use node::{Node, NodeFailure, NodeStatus};
use wire::{Batch, BatchWriter, Item};

/// Most samples or events a query may ask the nodes for (`offset + limit`): each node
/// answers up to that many.
pub const MAX_SCATTER_WINDOW: usize = 1_000_000;

/// Largest write batch sent in one request; a node's buffer is split there.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// Errors of this crate's own (the store calls answer [`datanexus_store::Error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record that cannot be put into a batch.
    #[error("cannot encode a record for a node: {0}")]
    Encode(String),
    /// A write batch that cannot be read.
    #[error("invalid write batch: {0}")]
    Decode(String),
    /// A node list that cannot be used.
    #[error("invalid node list: {0}")]
    Nodes(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a [`ClusterStore`] reaches its nodes.
#[derive(Clone)]
pub struct ClusterOptions {
    /// The nodes' base URLs (`http://host:port`), in placement order.
    pub nodes: Vec<String>,
    /// Bearer token sent to every node.
    pub token: Option<String>,
    /// How long a node gets per call.
    pub timeout: Duration,
}

impl std::fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("nodes", &self.nodes)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Batches waiting for one node.
struct Pending {
    node: Arc<Node>,
    /// Full batches first, the one being filled last.
    batches: Vec<BatchWriter>,
}

impl Pending {
    /// Adds a record, starting a new batch where it would make the last one pass
    /// [`MAX_BATCH_BYTES`] (a record larger than that is a batch of its own).
    fn push(&mut self, item: &Item) {
        let fits = |b: &BatchWriter| b.is_empty() || b.len() + item.framed_len() <= MAX_BATCH_BYTES;
        match self.batches.last_mut() {
            Some(last) if fits(last) => last.push(item),
            _ => {
                let mut batch = BatchWriter::default();
                batch.push(item);
                self.batches.push(batch);
            }
        }
    }

    fn records(&self) -> u64 {
        self.batches.iter().map(BatchWriter::records).sum()
    }
}

/// The store of a control node (see the crate docs).
pub struct ClusterStore {
    nodes: RwLock<Arc<[Arc<Node>]>>,
    client: node::Client,
    /// Per node URL: what the next flush sends.
    pending: Mutex<HashMap<String, Pending>>,
    /// One flush at a time (see the crate docs).
    flush_lock: tokio::sync::Mutex<()>,
    /// Stream results written and not yet confirmed by their node, per client: a
    /// reconnecting client's replay reads them too, so results are visible at once (the
    /// forwarder routes a result live right after writing it, and relies on a replay
    /// finding it if the live delivery is missed).
    unconfirmed_results: Mutex<HashMap<String, BTreeMap<u64, StoredResult>>>,
}

impl ClusterStore {
    /// A store over `options.nodes` (nothing is contacted yet).
    ///
    /// # Errors
    /// [`Error::Nodes`] for an empty list, a URL that is not `http://host:port` or a
    /// node listed twice.
    pub fn new(options: ClusterOptions) -> Result<Self> {
        let client = node::Client::new(options.token, options.timeout);
        let store = ClusterStore {
            nodes: RwLock::new(Arc::from(Vec::new())),
            client,
            pending: Mutex::new(HashMap::new()),
            flush_lock: tokio::sync::Mutex::new(()),
            unconfirmed_results: Mutex::new(HashMap::new()),
        };
        store.set_nodes(&options.nodes)?;
        Ok(store)
    }

    /// Replaces the node list (placement changes from the next write on; buffered
    /// batches still go to the node they were placed on). Nodes kept keep their status.
    ///
    /// # Errors
    /// As [`ClusterStore::new`]; the list is unchanged then.
    pub fn set_nodes(&self, urls: &[String]) -> Result<()> {
        if urls.is_empty() {
            return Err(Error::Nodes("at least one node is needed".to_owned()));
        }
        let old = self.nodes();
        let mut nodes: Vec<Arc<Node>> = Vec::with_capacity(urls.len());
        for url in urls {
            let base = node::base_url(url).map_err(Error::Nodes)?;
            if nodes.iter().any(|n| n.url() == base) {
                return Err(Error::Nodes(format!("{base} is listed twice")));
            }
            let kept = old.iter().find(|n| n.url() == base).cloned();
            nodes.push(kept.unwrap_or_else(|| Arc::new(Node::new(base))));
        }
        *self.nodes.write() = Arc::from(nodes);
        let mut pending = self.pending.lock();
        self.replace_orphans(&mut pending);
        Ok(())
    }

    /// The nodes, in placement order.
    pub fn nodes(&self) -> Arc<[Arc<Node>]> {
        self.nodes.read().clone()
    }

    /// Each node's status, with the records buffered for it (nodes removed from the list
    /// but still owed batches are listed after the others).
    pub fn status(&self) -> Vec<NodeStatus> {
        let nodes = self.nodes();
        let pending = self.pending.lock();
        let backlog = |url: &str| pending.get(url).map_or(0, Pending::records);
        let mut out: Vec<NodeStatus> = nodes
            .iter()
            .map(|n| n.status(backlog(n.url()) + n.in_flight()))
            .collect();
        for (url, p) in pending.iter() {
            if !nodes.iter().any(|n| n.url() == url) {
                out.push(p.node.status(p.records() + p.node.in_flight()));
            }
        }
        out
    }

    /// The series count of every node (its datasets), for `GET /control/nodes`; a node
    /// that does not answer has `None`.
    pub async fn series_counts(&self) -> Vec<(String, Option<u64>)> {
        let nodes = self.nodes();
        futures::future::join_all(nodes.iter().map(|n| async {
            let datasets: std::result::Result<Vec<DatasetInfo>, NodeFailure> =
                self.client.get_json(n, wire::DATASETS_PATH).await;
            (
                n.url().to_owned(),
                datasets
                    .ok()
                    .map(|d| d.iter().map(|d| d.series_count).sum()),
            )
        }))
        .await
    }

    /// The owner of a key hash among `n` nodes.
    fn owner(nodes: &[Arc<Node>], key: u64) -> &Arc<Node> {
        let i = jump_hash(key, nodes.len() as u32) as usize;
        &nodes[i.min(nodes.len() - 1)]
    }

    /// Adds records to the batches of their owners.
    fn buffer<T>(
        &self,
        items: &[T],
        key: impl Fn(&T) -> u64,
        encode: impl Fn(&T) -> Result<Item>,
    ) -> datanexus_store::Result<()> {
        let encoded: Vec<(u64, Item)> = items
            .iter()
            .map(|i| Ok((key(i), encode(i)?)))
            .collect::<Result<_>>()
            .map_err(|e| datanexus_store::Error::Invalid(e.to_string()))?;
        let nodes = self.nodes();
        let mut pending = self.pending.lock();
        for (key, item) in &encoded {
            place(&mut pending, &nodes, *key, item);
        }
        Ok(())
    }

    /// Puts the batches owed to nodes that left the list back through placement (they
    /// were never confirmed, so nothing is acknowledged for them yet).
    fn replace_orphans(&self, pending: &mut HashMap<String, Pending>) {
        let nodes = self.nodes();
        let orphans: Vec<String> = pending
            .keys()
            .filter(|url| !nodes.iter().any(|n| n.url() == url.as_str()))
            .cloned()
            .collect();
        for url in orphans {
            let Some(gone) = pending.remove(&url) else {
                continue;
            };
            for batch in gone.batches {
                match Batch::decode(batch.bytes()) {
                    Ok(records) => {
                        for p in &records.points {
                            let key = point_key(&p.measurement, &p.labels);
                            place(pending, &nodes, key, &Item::point(p));
                        }
                        for e in &records.events {
                            if let Ok(item) = Item::event(e) {
                                place(pending, &nodes, xxh3(e.source_id.as_bytes()), &item);
                            }
                        }
                        for r in &records.results {
                            if let Ok(item) = Item::result(r) {
                                place(pending, &nodes, xxh3(r.client_id.as_bytes()), &item);
                            }
                        }
                    }
                    Err(e) => {
                        // Our own encoding, so this cannot happen; the batch stays owed.
                        tracing::error!(error = %e, node = %url, "cannot re-place a batch");
                        pending
                            .entry(url.clone())
                            .or_insert_with(|| Pending {
                                node: gone.node.clone(),
                                batches: Vec::new(),
                            })
                            .batches
                            .push(batch);
                    }
                }
            }
        }
    }

    /// Calls every node at once; answers of the nodes that answered, or the failure of
    /// the first that did not (unless partial answers are accepted: then it is noted
    /// and left out). A node's 404 leaves it out too; every node's 404 is a 404.
    async fn scatter<T, F, Fut>(
        &self,
        measurement: &str,
        call: F,
    ) -> datanexus_store::Result<Vec<T>>
    where
        F: Fn(Arc<Node>) -> Fut,
        Fut: Future<Output = std::result::Result<T, NodeFailure>>,
    {
        let nodes = self.nodes();
        let answers = futures::future::join_all(nodes.iter().map(|n| call(n.clone()))).await;
        let mut out = Vec::with_capacity(answers.len());
        let mut not_found = false;
        for (node, answer) in nodes.iter().zip(answers) {
            match answer {
                Ok(v) => out.push(v),
                Err(NodeFailure::NotFound(_)) => not_found = true,
                Err(NodeFailure::Invalid(message)) => {
                    return Err(datanexus_store::Error::Invalid(message));
                }
                Err(NodeFailure::Down(cause)) => {
                    if !scatter::note_missing(node.url()) {
                        return Err(datanexus_store::Error::Unavailable(format!(
                            "node {} did not answer: {cause}",
                            node.url()
                        )));
                    }
                }
            }
        }
        if not_found && out.is_empty() {
            return Err(datanexus_store::Error::NotFound(measurement.to_owned()));
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for ClusterStore {
    fn name(&self) -> &'static str {
        "cluster"
    }

    async fn write_points(&self, points: &[Point]) -> datanexus_store::Result<()> {
        self.buffer(
            points,
            |p| point_key(&p.measurement, &p.labels),
            |p| Ok(Item::point(p)),
        )
    }

    async fn write_events(&self, events: &[StoredEvent]) -> datanexus_store::Result<()> {
        self.buffer(events, |e| xxh3(e.source_id.as_bytes()), Item::event)
    }

    async fn write_results(&self, results: &[StoredResult]) -> datanexus_store::Result<()> {
        self.buffer(results, |r| xxh3(r.client_id.as_bytes()), Item::result)?;
        let mut unconfirmed = self.unconfirmed_results.lock();
        for r in results {
            unconfirmed
                .entry(r.client_id.clone())
                .or_default()
                .insert(r.seq, r.clone());
        }
        Ok(())
    }

    async fn flush(&self) -> datanexus_store::Result<FlushReport> {
        let _one_at_a_time = self.flush_lock.lock().await;
        // The results this flush carries. Taken before the batches: `write_results`
        // buffers a result before it lists it, so each one listed now is in a batch
        // taken below.
        let carried: Vec<(String, u64)> = self
            .unconfirmed_results
            .lock()
            .iter()
            .flat_map(|(client, rs)| rs.keys().map(move |seq| (client.clone(), *seq)))
            .collect();
        let taken: Vec<Pending> = {
            let mut pending = self.pending.lock();
            pending.drain().map(|(_, p)| p).collect()
        };
        let sent = futures::future::join_all(taken.into_iter().map(|p| async move {
            let mut batches = p.batches.into_iter();
            let mut rows = 0;
            let mut bytes = 0;
            for batch in batches.by_ref() {
                let records = batch.records();
                let body = batch.clone().finish();
                let size = body.len() as u64;
                match self.client.write(&p.node, body, records).await {
                    Ok(()) => {
                        rows += records;
                        bytes += size;
                    }
                    Err(e) => {
                        let mut left = vec![batch];
                        left.extend(batches);
                        return (Err(e), p.node, left, rows, bytes);
                    }
                }
            }
            (Ok(()), p.node, Vec::new(), rows, bytes)
        }))
        .await;
        let mut report = FlushReport::default();
        let mut failed = Vec::new();
        let mut pending = self.pending.lock();
        for (outcome, node, left, rows, bytes) in sent {
            report.rows += rows;
            report.bytes += bytes;
            if let Err(e) = outcome {
                failed.push(format!("{}: {}", node.url(), e.message()));
                // Unsent batches go back before anything written meanwhile.
                let entry = pending
                    .entry(node.url().to_owned())
                    .or_insert_with(|| Pending {
                        node: node.clone(),
                        batches: Vec::new(),
                    });
                let newer = std::mem::replace(&mut entry.batches, left);
                entry.batches.extend(newer);
            }
        }
        // A node removed from the list while its batches were out gets them re-placed.
        self.replace_orphans(&mut pending);
        drop(pending);
        if failed.is_empty() {
            let mut unconfirmed = self.unconfirmed_results.lock();
            for (client, seq) in carried {
                if let Some(rs) = unconfirmed.get_mut(&client) {
                    rs.remove(&seq);
                    if rs.is_empty() {
                        unconfirmed.remove(&client);
                    }
                }
            }
            Ok(report)
        } else {
            Err(datanexus_store::Error::Unavailable(format!(
                "not confirmed by {} node(s), kept for the next flush: {}",
                failed.len(),
                failed.join("; ")
            )))
        }
    }

    async fn query(&self, query: &SeriesQuery) -> datanexus_store::Result<QueryResult> {
        let wanted = window(query.offset, query.limit)?;
        let per_node = SeriesQuery {
            offset: 0,
            limit: wanted,
            ..query.clone()
        };
        let answers: Vec<QueryResult> = self
            .scatter(&query.selector.measurement, |n| {
                let q = &per_node;
                async move { self.client.post_json(&n, wire::QUERY_PATH, q).await }
            })
            .await?;
        Ok(merge_samples(answers, query.offset, query.limit))
    }

    async fn aggregate(&self, query: &AggregateQuery) -> datanexus_store::Result<AggregateResult> {
        Ok(self.aggregate_parts(query).await?.finish())
    }

    async fn aggregate_parts(
        &self,
        query: &AggregateQuery,
    ) -> datanexus_store::Result<AggregateParts> {
        // Checked here too, so a bad query is a 400 even when every node is down.
        let mut merged = AggregateParts::new(&query.quantiles, &query.buckets)?;
        if let Some(step) = query.step_ns.filter(|s| *s <= 0) {
            return Err(datanexus_store::Error::Invalid(format!(
                "step {step} ns must be positive"
            )));
        }
        let answers: Vec<bytes::Bytes> = self
            .scatter(&query.selector.measurement, |n| async move {
                self.client
                    .post_bytes(&n, wire::AGGREGATE_PATH, query)
                    .await
            })
            .await?;
        for bytes in answers {
            let parts =
                AggregateParts::decode(&bytes, &query.quantiles, &query.buckets).map_err(|e| {
                    datanexus_store::Error::Internal(format!("a node's aggregate: {e}"))
                })?;
            merged.merge(parts)?;
        }
        Ok(merged)
    }

    async fn events(&self, query: &EventQuery) -> datanexus_store::Result<EventPage> {
        let per_node = EventQuery {
            offset: 0,
            limit: window(query.offset, query.limit)?,
            ..query.clone()
        };
        let answers: Vec<EventPage> = self
            .scatter("", |n| {
                let q = &per_node;
                async move { self.client.post_json(&n, wire::EVENTS_PATH, q).await }
            })
            .await?;
        let total = answers.iter().map(|p| p.total).sum();
        let mut events: Vec<StoredEvent> = answers.into_iter().flat_map(|p| p.events).collect();
        events.sort_by(|a, b| (a.timestamp_ns, &a.id).cmp(&(b.timestamp_ns, &b.id)));
        events.dedup_by(|a, b| a.id == b.id);
        let events = events
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .collect();
        Ok(EventPage { total, events })
    }

    async fn results(&self, query: &ResultQuery) -> datanexus_store::Result<ResultPage> {
        let answers: Vec<ResultPage> = self
            .scatter("", |n| async move {
                self.client.post_json(&n, wire::RESULTS_PATH, query).await
            })
            .await?;
        let rows_read = answers.iter().map(|p| p.rows_read).sum();
        let mut by_seq: BTreeMap<u64, StoredResult> = BTreeMap::new();
        let mut total = 0;
        // Results not confirmed by their node yet (possibly on it already: once).
        if let Some(rs) = self.unconfirmed_results.lock().get(&query.client_id) {
            for (seq, r) in rs.range(query.after_seq.saturating_add(1)..) {
                by_seq.insert(*seq, r.clone());
                total += 1;
            }
        }
        for page in answers {
            total += page.total;
            for r in page.results {
                if by_seq.insert(r.seq, r).is_some() {
                    // The same result on two nodes (placement changed) counts once.
                    total = total.saturating_sub(1);
                }
            }
        }
        let skip = by_seq.len().saturating_sub(query.limit);
        Ok(ResultPage {
            results: by_seq.into_values().skip(skip).collect(),
            total,
            rows_read,
        })
    }

    async fn datasets(&self) -> datanexus_store::Result<Vec<DatasetInfo>> {
        let answers: Vec<Vec<DatasetInfo>> = self
            .scatter("", |n| async move {
                self.client.get_json(&n, wire::DATASETS_PATH).await
            })
            .await?;
        Ok(merge_datasets(answers))
    }

    async fn latest(&self) -> datanexus_store::Result<Vec<Latest>> {
        let answers: Vec<Vec<Latest>> = self
            .scatter("", |n| async move {
                self.client.get_json(&n, wire::LATEST_PATH).await
            })
            .await?;
        let mut by_key: BTreeMap<SeriesKey, Latest> = BTreeMap::new();
        for latest in answers.into_iter().flatten() {
            match by_key.get(&latest.key) {
                Some(have) if have.sample.timestamp_ns >= latest.sample.timestamp_ns => {}
                _ => {
                    by_key.insert(latest.key.clone(), latest);
                }
            }
        }
        Ok(by_key.into_values().collect())
    }

    /// Ready to take writes: the control node's own log holds them until the nodes
    /// confirm, so a node that is down does not make the control node unready (its
    /// state and backlog are in `GET /control/nodes` and `/ready`).
    async fn ready(&self) -> datanexus_store::Result<()> {
        Ok(())
    }

    /// Each node applies its own retention.
    async fn enforce_retention(&self) -> datanexus_store::Result<()> {
        Ok(())
    }

    async fn stop(&self) -> datanexus_store::Result<()> {
        self.flush().await.map(|_| ())
    }
}

/// `offset + limit`, what each node is asked for, when it is within
/// [`MAX_SCATTER_WINDOW`].
fn window(offset: usize, limit: usize) -> datanexus_store::Result<usize> {
    match offset.checked_add(limit) {
        Some(n) if n <= MAX_SCATTER_WINDOW => Ok(n),
        _ => Err(datanexus_store::Error::Invalid(format!(
            "offset + limit is {} on a control node, at most {MAX_SCATTER_WINDOW} (each node \
             answers that many); narrow the time range instead",
            offset.saturating_add(limit)
        ))),
    }
}

/// Adds an encoded record to the batches of its owner among `nodes`.
fn place(pending: &mut HashMap<String, Pending>, nodes: &[Arc<Node>], key: u64, item: &Item) {
    let node = ClusterStore::owner(nodes, key);
    pending
        .entry(node.url().to_owned())
        .or_insert_with(|| Pending {
            node: node.clone(),
            batches: Vec::new(),
        })
        .push(item);
}

fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The page `offset..offset + limit` of the nodes' samples in (timestamp, series key)
/// order; each answer holds its node's first `offset + limit`.
fn merge_samples(answers: Vec<QueryResult>, offset: usize, limit: usize) -> QueryResult {
    let total = answers.iter().map(|a| a.total).sum();
    let keys: Vec<SeriesKey> = answers
        .iter()
        .flat_map(|a| a.series.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index = |k: &SeriesKey| keys.binary_search(k).unwrap_or(0);
    let mut all: Vec<(usize, datanexus_store::Sample)> = answers
        .iter()
        .flat_map(|a| {
            a.samples
                .iter()
                .filter_map(|(i, s)| a.series.get(*i).map(|k| (index(k), *s)))
        })
        .collect();
    // Key indexes follow key order, so this is (timestamp, series key) order.
    all.sort_by_key(|(key, s)| (s.timestamp_ns, *key));
    // A sample on two nodes (placement changed and a batch was sent again) once.
    all.dedup_by(|a, b| a.0 == b.0 && a.1.timestamp_ns == b.1.timestamp_ns);
    let picked = all.into_iter().skip(offset).take(limit).collect();
    QueryResult::from_picked(picked, |i| keys.get(i).cloned(), total)
}

/// One entry per measurement: counts added, ranges widened, names united; type and help
/// from the node with the latest sample.
fn merge_datasets(answers: Vec<Vec<DatasetInfo>>) -> Vec<DatasetInfo> {
    let mut by_name: BTreeMap<String, DatasetInfo> = BTreeMap::new();
    for info in answers.into_iter().flatten() {
        match by_name.get_mut(&info.measurement) {
            None => {
                by_name.insert(info.measurement.clone(), info);
            }
            Some(have) => {
                if info.last_ns > have.last_ns {
                    have.kind = info.kind;
                    have.help = info.help.clone();
                }
                have.series_count += info.series_count;
                have.sample_count += info.sample_count;
                have.first_ns = have.first_ns.min(info.first_ns);
                have.last_ns = have.last_ns.max(info.last_ns);
                for (mine, theirs) in [
                    (&mut have.fields, info.fields),
                    (&mut have.label_names, info.label_names),
                ] {
                    mine.extend(theirs);
                    mine.sort();
                    mine.dedup();
                }
            }
        }
    }
    by_name.into_values().collect()
}

#[cfg(test)]
mod tests;
