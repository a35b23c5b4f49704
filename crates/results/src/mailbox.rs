//! How results reach clients: the [`ResultRouter`] that delivers them live, and the
//! [`Mailbox`] a reattaching stream reads the ones it missed from ([`StoreMailbox`]:
//! the store, by its (client, seq) index; with separate gateways, a shared mailbox in
//! Redis, `datanexus-fanout`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_store::{ResultQuery, Store};

use crate::Result;
use crate::record::{from_stored, result_seq};

/// Delivers results to the clients' live streams (the server's session registry
/// implements it; with Redis, a publisher to the owning gateway's channel does).
#[async_trait]
pub trait ResultRouter: Send + Sync + 'static {
    /// Offers results, in `results`-topic order, to their clients' sessions. Results for
    /// clients that are not connected are skipped: they are in the store already and are
    /// replayed when the client reconnects. Must not block on a slow client for long.
    async fn route(&self, results: &[ResultRecord]);
}

/// A client's results read back for replay.
#[derive(Debug, Default)]
pub struct Replay {
    /// The results to replay, in seq order.
    pub results: VecDeque<ResultRecord>,
    /// Older results left out (beyond the count or age bound).
    pub dropped: u64,
}

/// Where a gateway reads back the results of a client whose stream (re)attaches: the
/// store when the gateway runs in the same process as the forwarder, a shared mailbox
/// (Redis) when gateways are separate processes.
///
/// Contract with the router: a result is written to the mailbox *before* it is routed
/// live, so a stream that attaches (after [`Mailbox::claim`]) either finds a result in
/// [`Mailbox::replay`] or receives it live, never neither.
#[async_trait]
pub trait Mailbox: Send + Sync + 'static {
    /// A stream of `client_id` is attaching to this process: make sure results routed
    /// from now on reach it here. Called before [`Mailbox::replay`].
    ///
    /// # Errors
    /// The mailbox is unreachable.
    async fn claim(&self, client_id: &str) -> Result<()>;

    /// The results of `client_id` with a seq above `after_seq`, processed at or after
    /// `min_processed_ns`: the newest `max` of them, in seq order; older ones are
    /// counted as dropped.
    ///
    /// # Errors
    /// The mailbox cannot be read.
    async fn replay(
        &self,
        client_id: &str,
        after_seq: u64,
        max: usize,
        min_processed_ns: i64,
    ) -> Result<Replay>;

    /// The highest result seq a gateway handed to `client_id`'s stream, as shared
    /// between gateways (`None`: not shared, or not known). The default shares nothing
    /// (one process keeps its cursors itself).
    ///
    /// # Errors
    /// The mailbox cannot be read.
    async fn delivered(&self, client_id: &str) -> Result<Option<u64>> {
        let _ = client_id;
        Ok(None)
    }

    /// Shares the delivered cursors of clients (client id, seq) with other gateways.
    ///
    /// # Errors
    /// The mailbox cannot be written.
    async fn save_delivered(&self, cursors: &[(String, u64)]) -> Result<()> {
        let _ = cursors;
        Ok(())
    }
}

/// The [`Mailbox`] of a single process: the store the forwarder writes results to,
/// read by its (client, seq) index ([`Store::results`]): a replay reads about what it
/// returns, whatever the client's history.
#[derive(Clone)]
pub struct StoreMailbox {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for StoreMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMailbox")
            .field("store", &self.store.name())
            .finish()
    }
}

impl StoreMailbox {
    /// A mailbox over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreMailbox { store }
    }
}

#[async_trait]
impl Mailbox for StoreMailbox {
    async fn claim(&self, _client_id: &str) -> Result<()> {
        Ok(())
    }

    async fn replay(
        &self,
        client_id: &str,
        after_seq: u64,
        max: usize,
        min_processed_ns: i64,
    ) -> Result<Replay> {
        if max == 0 {
            return Ok(Replay::default());
        }
        let page = self
            .store
            .results(&ResultQuery {
                client_id: client_id.to_owned(),
                after_seq,
                limit: max,
            })
            .await?;
        // Older than the bound: dropped like those beyond `max`.
        let results: VecDeque<ResultRecord> = page
            .results
            .into_iter()
            .filter(|r| r.processed_ns >= min_processed_ns)
            .map(from_stored)
            .collect();
        let kept = u64::try_from(results.len()).unwrap_or(u64::MAX);
        Ok(Replay {
            results,
            dropped: page.total.saturating_sub(kept),
        })
    }
}

/// Keeps the newest `max` results above a seq and not older than a time, by seq;
/// shared by the [`Mailbox`] implementations.
#[derive(Debug)]
pub struct Kept {
    after_seq: u64,
    max: usize,
    min_processed_ns: i64,
    kept: BTreeMap<u64, ResultRecord>,
    dropped: u64,
}

impl Kept {
    /// Results with a seq above `after_seq`, processed at or after `min_processed_ns`,
    /// at most `max` of them.
    pub fn new(after_seq: u64, max: usize, min_processed_ns: i64) -> Self {
        Kept {
            after_seq,
            max,
            min_processed_ns,
            kept: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// Considers one result (in any order; duplicates by seq collapse).
    pub fn offer(&mut self, result: ResultRecord) {
        let seq = result_seq(&result);
        if seq <= self.after_seq || self.kept.contains_key(&seq) {
            return;
        }
        if result.processed_ns < self.min_processed_ns {
            self.dropped += 1;
            return;
        }
        self.kept.insert(seq, result);
        if self.kept.len() > self.max {
            self.kept.pop_first();
            self.dropped += 1;
        }
    }

    /// The kept results in seq order, and the count of those left out.
    pub fn finish(self) -> Replay {
        Replay {
            results: self.kept.into_values().collect(),
            dropped: self.dropped,
        }
    }
}
