//! `datanexus control rebalance`: after the node list changed, moves the old data of
//! each series that now belongs to another node to its owner — copy, verify, delete —
//! so that every series lives on exactly its owner again.
//!
//! Per misplaced series (found in each node's latest-sample list): read all its samples
//! from the node that holds them; ask the owner which of those timestamps it already has
//! (a newer write there wins: it is not overwritten); send the others to the owner, which
//! answers once they are durable; read the owner back and check that every timestamp is
//! there (with the copied value where it was copied); only then delete the series up to
//! the last copied timestamp from the old node. Interrupted at any point, a new run
//! finds what is still misplaced and finishes it: copying twice is absorbed by the
//! idempotent store, and nothing is deleted before the owner holds it. Samples written to
//! the old node after its read (a batch placed before the change) stay and are moved by
//! the next run. Events and stream results are not moved (queries read every node).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datanexus_model::point::FieldValue;
use datanexus_model::series::point_key;
use datanexus_model::{Point, jump_hash};
use datanexus_store::{Latest, QueryResult, Sample, Selector, SeriesKey, SeriesQuery, TimeRange};
use serde::{Deserialize, Serialize};

use crate::ClusterStore;
use crate::node::{Node, NodeFailure};
use crate::wire::{self, BatchWriter};

/// Samples read per query page.
const PAGE: usize = 100_000;
/// Samples sent per write batch.
const COPY_BATCH: usize = 50_000;

/// Series moved per delete request (a delete rewrites the node's files that hold them,
/// once for the whole group).
const DELETE_GROUP: usize = 1_000;

/// The body of `POST /internal/store/delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// Each series with the time up to which (inclusive) its samples are deleted.
    pub series: Vec<(SeriesKey, i64)>,
}

/// The answer of `POST /internal/store/delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAnswer {
    /// Samples deleted.
    pub deleted: u64,
}

/// What a rebalance did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RebalanceReport {
    /// Series found on the nodes (a series on two nodes counts twice).
    pub series: u64,
    /// Of those, on a node that is not their owner.
    pub misplaced: u64,
    /// Series moved (their old data is on the owner and deleted from the old node).
    pub moved: u64,
    /// Samples sent to owners (those the owner had already are not sent).
    pub samples_copied: u64,
    /// Samples deleted from old nodes.
    pub samples_deleted: u64,
}

/// Progress of a rebalance, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The nodes were listed: this many series are to move.
    Planned {
        /// Series to move.
        misplaced: u64,
    },
    /// One series moved.
    Moved {
        /// The series.
        key: SeriesKey,
        /// Its old node.
        from: String,
        /// Its owner.
        to: String,
        /// Samples it had on the old node.
        samples: u64,
    },
}

fn down(node: &Node, e: &NodeFailure) -> datanexus_store::Error {
    datanexus_store::Error::Unavailable(format!("node {}: {}", node.url(), e.message()))
}

impl ClusterStore {
    /// Moves every misplaced series to its owner (see the module docs), reporting each
    /// step to `progress`.
    ///
    /// # Errors
    /// [`datanexus_store::Error::Unavailable`] naming a node that failed (what was
    /// moved before stays moved; run it again), or `Internal` when an owner does not
    /// hold what was copied to it (nothing is deleted then).
    pub async fn rebalance(
        &self,
        mut progress: impl FnMut(&Progress),
    ) -> datanexus_store::Result<RebalanceReport> {
        let nodes = self.nodes();
        let mut report = RebalanceReport::default();
        let mut plan: Vec<(usize, usize, Latest)> = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let latest: Vec<Latest> = self
                .client
                .get_json(node, wire::LATEST_PATH)
                .await
                .map_err(|e| down(node, &e))?;
            report.series += latest.len() as u64;
            for l in latest {
                let owner = jump_hash(
                    point_key(&l.key.measurement, &l.key.labels),
                    nodes.len() as u32,
                ) as usize;
                if owner != i {
                    plan.push((i, owner.min(nodes.len() - 1), l));
                }
            }
        }
        report.misplaced = plan.len() as u64;
        progress(&Progress::Planned {
            misplaced: report.misplaced,
        });
        // Grouped by old node (the plan is in node order), a delete per group.
        for group in plan.chunk_by(|a, b| a.0 == b.0) {
            for chunk in group.chunks(DELETE_GROUP) {
                let from = &nodes[chunk[0].0];
                let mut copied_up_to = Vec::with_capacity(chunk.len());
                let mut done = Vec::with_capacity(chunk.len());
                for (_, to, latest) in chunk {
                    let to = &nodes[*to];
                    if let Some((samples, copied, up_to)) =
                        self.copy_series(from, to, latest).await?
                    {
                        report.samples_copied += copied;
                        copied_up_to.push((latest.key.clone(), up_to));
                        done.push((to, latest, samples));
                    }
                }
                if !copied_up_to.is_empty() {
                    let answer: DeleteAnswer = self
                        .client
                        .post_json(
                            from,
                            wire::DELETE_PATH,
                            &DeleteRequest {
                                series: copied_up_to,
                            },
                        )
                        .await
                        .map_err(|e| down(from, &e))?;
                    report.samples_deleted += answer.deleted;
                }
                report.moved += chunk.len() as u64;
                for (to, latest, samples) in done {
                    progress(&Progress::Moved {
                        key: latest.key.clone(),
                        from: from.url().to_owned(),
                        to: to.url().to_owned(),
                        samples,
                    });
                }
            }
        }
        Ok(report)
    }

    /// Copies one series to its owner and verifies the owner holds it; returns (samples
    /// found, samples copied, last timestamp) — `None` when the old node has nothing of
    /// it any more.
    async fn copy_series(
        &self,
        from: &Arc<Node>,
        to: &Arc<Node>,
        latest: &Latest,
    ) -> datanexus_store::Result<Option<(u64, u64, i64)>> {
        let key = &latest.key;
        let samples = self.read_series(from, key, TimeRange::default()).await?;
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Ok(None);
        };
        let range = TimeRange {
            start_ns: Some(first.timestamp_ns),
            end_ns: Some(last.timestamp_ns),
        };
        let up_to = last.timestamp_ns;
        let had: HashSet<i64> = self
            .read_series(to, key, range)
            .await?
            .iter()
            .map(|s| s.timestamp_ns)
            .collect();
        let copy: Vec<&Sample> = samples
            .iter()
            .filter(|s| !had.contains(&s.timestamp_ns))
            .collect();
        for chunk in copy.chunks(COPY_BATCH) {
            let mut batch = BatchWriter::default();
            for s in chunk {
                batch.point(&Point {
                    measurement: key.measurement.clone(),
                    labels: key.labels.clone(),
                    fields: vec![(key.field.clone(), FieldValue::F64(s.value))],
                    timestamp_ns: s.timestamp_ns,
                    kind: latest.kind,
                    help: latest.help.clone(),
                });
            }
            let records = batch.records();
            self.client
                .write(to, batch.finish(), records)
                .await
                .map_err(|e| down(to, &e))?;
        }
        let now: HashMap<i64, u64> = self
            .read_series(to, key, range)
            .await?
            .iter()
            .map(|s| (s.timestamp_ns, s.value.to_bits()))
            .collect();
        for s in &samples {
            let copied = !had.contains(&s.timestamp_ns);
            match now.get(&s.timestamp_ns) {
                Some(bits) if !copied || *bits == s.value.to_bits() => {}
                _ => {
                    return Err(datanexus_store::Error::Internal(format!(
                        "{} does not hold the sample of {key:?} at {} after the copy: \
                         nothing was deleted from {}",
                        to.url(),
                        s.timestamp_ns,
                        from.url()
                    )));
                }
            }
        }
        Ok(Some((samples.len() as u64, copy.len() as u64, up_to)))
    }

    /// Every sample of exactly the series `key` in `range` on `node`, in time order
    /// (nothing when the node does not know the metric).
    async fn read_series(
        &self,
        node: &Arc<Node>,
        key: &SeriesKey,
        range: TimeRange,
    ) -> datanexus_store::Result<Vec<Sample>> {
        let selector = Selector {
            measurement: key.measurement.clone(),
            field: key.field.clone(),
            matchers: key
                .labels
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let query = SeriesQuery {
                selector: selector.clone(),
                range,
                limit: PAGE,
                offset,
            };
            let page: QueryResult =
                match self.client.post_json(node, wire::QUERY_PATH, &query).await {
                    Ok(page) => page,
                    Err(NodeFailure::NotFound(_)) => return Ok(out),
                    Err(e) => return Err(down(node, &e)),
                };
            // The selector also matches series with more labels: keep exactly this one.
            let mine = page.series.iter().position(|k| k == key);
            out.extend(
                page.samples
                    .iter()
                    .filter(|(i, _)| Some(*i) == mine)
                    .map(|(_, s)| *s),
            );
            offset += page.samples.len();
            if page.samples.len() < PAGE {
                return Ok(out);
            }
        }
    }
}
