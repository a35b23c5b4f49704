//! The client event streams. This file: the registry — which client is connected on
//! which stream, what it has been sent, and the cursors that say where it resumes;
//! `requests.rs`: the request side (appending events, answering refusals in order)
//! that the nimbus and native protocols share.
//!
//! Results reach a client on two paths that meet under one per-client lock:
//!
//! - **route** ([`ResultRouter::route`], called by the forwarder *after* it wrote the
//!   results to the store): for each result, lock its client; if a stream is attached
//!   and the result's seq is above what that stream was sent, put it in the stream's
//!   bounded buffer. A full buffer is waited on for at most `slow_client_timeout`; then
//!   the stream is closed with `RESOURCE_EXHAUSTED` ("client too slow; reconnect to
//!   resume"). Results of clients without a stream are skipped: they are in the store.
//! - **attach** (a stream connects): lock the client; close the stream it replaces
//!   (`ABORTED`, "another stream with client_id … took over": the new stream wins);
//!   read the client's stored results with a seq above its cursor (the newest
//!   `max_replay_results` of them, oldest first), queue them for the new stream, and
//!   attach it, all before unlocking.
//!
//! Since the store is written before routing and both paths hold the same lock, a
//! result is either replayed or routed, never missed; a stream drops duplicates by seq.
//!
//! Cursors (persisted every second while they change, see `cursors.rs`, and the
//! `delivered` ones also shared through the [`Mailbox`], so that a `nimbus` client that
//! reconnects to another gateway resumes where the first one left off): `delivered` = the highest seq a stream handed
//! to the transport (the `nimbus` resume point: results written into a stream that then
//! broke may be lost in transit, at-most-once for those; results still buffered are
//! replayed) and `acked` = the highest seq a `datanexus.v1.EventStream` client
//! acknowledged (the native resume point, together with `Hello.resume_after`: nothing
//! is lost, every result is replayed until acknowledged).
//!
//! # Layout
//! - `requests.rs`: [`requests::RequestSide`] and the [`requests::StreamProtocol`] each
//!   gRPC protocol implements.
//! - `outbound.rs`: [`Outbound`], the response side of one stream (replay, buffer,
//!   in-band replies in order, takeover and close).
//! - `cursors.rs`: the cursor file (atomic writes) and its periodic flush.
//! - `tests.rs`: unit tests over a real embedded store.

mod cursors;
mod outbound;
pub(crate) mod requests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datanexus_broker::RecordId;
use datanexus_pipeline::results::{Mailbox, Replay, ResultRouter, event_position, result_seq};
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_telemetry::{Component, ErrorKind, Telemetry};
use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

pub(crate) use self::cursors::Cursors;
pub(crate) use self::outbound::{Outbound, Outgoing, Rejection, Reply};
use crate::{Result, ServerOptions};

/// Which protocol a stream speaks: it decides the resume cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `nimbus.NimbusService`: resume after the last result handed to the transport.
    Nimbus,
    /// `datanexus.v1.EventStream`: resume after max(`resume_after`, acknowledged).
    Native {
        /// `Hello.resume_after`.
        resume_after: u64,
    },
}

/// One client's state.
pub(crate) struct Client {
    id: String,
    /// The cursors and the generation of the newest stream. A short lock, never held
    /// across an await.
    live: Mutex<Live>,
    /// The attached stream; held across replay, so attach and route of one client are
    /// serialized.
    attached: tokio::sync::Mutex<Option<Attached>>,
}

#[derive(Debug, Default)]
struct Live {
    /// The generation of the newest stream; older streams may no longer deliver.
    generation: u64,
    cursors: Cursors,
}

/// The attached stream of a client, as routing sees it.
struct Attached {
    generation: u64,
    tx: mpsc::Sender<Outgoing>,
    close: Option<oneshot::Sender<Status>>,
    /// The highest result seq put in this stream's buffer (or replayed to it).
    sent: u64,
}

impl Attached {
    fn close(mut self, status: Status) {
        if let Some(close) = self.close.take() {
            let _ = close.send(status);
        }
    }
}

/// Limits of the streams (from [`ServerOptions`]).
#[derive(Debug, Clone, Copy)]
struct StreamLimits {
    max_replay_results: usize,
    max_replay_age: Duration,
    channel_capacity: usize,
    slow_client_timeout: Duration,
}

/// The registry of client streams; the [`ResultRouter`] the pipeline's forwarder
/// delivers results through. Get it from [`AppState::sessions`](crate::AppState::sessions).
pub struct Sessions {
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Where a reattaching client's results are read back from.
    mailbox: Arc<dyn Mailbox>,
    telemetry: Arc<Telemetry>,
    limits: StreamLimits,
    next_generation: AtomicU64,
    /// Where the cursors are persisted, if anywhere.
    state_dir: Option<PathBuf>,
    /// Cursors changed since the last persist.
    dirty: AtomicBool,
    /// The delivered cursors last shared through the mailbox.
    shared: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("clients", &self.clients.lock().len())
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// The registry, with the cursors persisted in `options.state_dir` (if any).
    ///
    /// # Errors
    /// The cursor file exists but cannot be read.
    pub(crate) async fn open(
        mailbox: Arc<dyn Mailbox>,
        telemetry: Arc<Telemetry>,
        options: &ServerOptions,
    ) -> Result<Arc<Sessions>> {
        let state_dir = options.state_dir.clone();
        let loaded = match &state_dir {
            Some(dir) => cursors::load(dir.clone()).await?,
            None => HashMap::new(),
        };
        let clients = loaded
            .into_iter()
            .map(|(id, cursors)| {
                let client = Client::new(id.clone(), cursors);
                (id, Arc::new(client))
            })
            .collect();
        Ok(Arc::new(Sessions {
            clients: Mutex::new(clients),
            mailbox,
            telemetry,
            limits: StreamLimits {
                max_replay_results: options.max_replay_results,
                max_replay_age: options.max_replay_age,
                channel_capacity: options.stream_channel_capacity.max(1),
                slow_client_timeout: options.slow_client_timeout,
            },
            next_generation: AtomicU64::new(0),
            state_dir,
            dirty: AtomicBool::new(false),
            shared: Mutex::new(HashMap::new()),
        }))
    }

    /// The cursors of `client_id`, if it is known (for tests and diagnostics).
    pub fn cursors(&self, client_id: &str) -> Option<(u64, u64)> {
        let client = self.clients.lock().get(client_id).cloned()?;
        let c = client.live.lock().cursors;
        Some((c.delivered, c.acked))
    }

    /// Whether `client_id` has a stream attached now.
    pub async fn is_connected(&self, client_id: &str) -> bool {
        let client = self.clients.lock().get(client_id).cloned();
        match client {
            Some(client) => client.attached.lock().await.is_some(),
            None => false,
        }
    }

    /// Attaches a new stream of `client_id`, replacing (closing) the one it had, and
    /// queues its stored results above its cursor for replay.
    ///
    /// # Errors
    /// The store cannot be read (the replaced stream is closed nevertheless).
    pub(crate) async fn attach(
        self: &Arc<Self>,
        client_id: &str,
        protocol: Protocol,
    ) -> Result<Outbound> {
        let client = self.client(client_id);
        let mut attached = client.attached.lock().await;
        if protocol == Protocol::Nimbus {
            // Another gateway may have delivered more to this client.
            if let Some(shared) = self.mailbox.delivered(client_id).await? {
                let mut live = client.live.lock();
                live.cursors.delivered = live.cursors.delivered.max(shared);
            }
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let cursor = self.take_over(&client, generation, protocol);
        if let Some(old) = attached.take() {
            old.close(Status::aborted(format!(
                "another stream with client_id {client_id:?} took over"
            )));
        }
        let replay = self.claim_and_replay(client_id, cursor).await?;
        if replay.dropped > 0 {
            self.count(ErrorKind::ReplayDropped, replay.dropped);
        }
        let (tx, rx) = mpsc::channel(self.limits.channel_capacity);
        let (close, closed) = oneshot::channel();
        *attached = Some(Attached {
            generation,
            tx: tx.clone(),
            close: Some(close),
            sent: replay.results.back().map_or(cursor, result_seq),
        });
        drop(attached);
        Ok(Outbound::new(
            Arc::clone(self),
            client,
            generation,
            cursor,
            replay.results,
            (tx, rx, closed),
        ))
    }

    /// Claims `client_id` in the mailbox (results are routed here from now on), then
    /// reads its results above `after_seq` within the replay bounds.
    async fn claim_and_replay(&self, client_id: &str, after_seq: u64) -> Result<Replay> {
        self.mailbox.claim(client_id).await?;
        let max_age = i64::try_from(self.limits.max_replay_age.as_nanos()).unwrap_or(i64::MAX);
        let min_processed_ns = datanexus_model::time::now_ns().saturating_sub(max_age);
        Ok(self
            .mailbox
            .replay(
                client_id,
                after_seq,
                self.limits.max_replay_results,
                min_processed_ns,
            )
            .await?)
    }

    /// Makes `generation` the live stream of `client` and returns its resume cursor.
    fn take_over(&self, client: &Client, generation: u64, protocol: Protocol) -> u64 {
        let mut live = client.live.lock();
        live.generation = generation;
        match protocol {
            Protocol::Nimbus => live.cursors.delivered,
            Protocol::Native { resume_after } => {
                if resume_after > live.cursors.acked {
                    live.cursors.acked = resume_after;
                    self.dirty.store(true, Ordering::Relaxed);
                }
                live.cursors.acked
            }
        }
    }

    /// Records that the stream `generation` of `client` handed result `seq` to the
    /// transport. False when a newer stream took over (the result must not be sent).
    fn mark_delivered(&self, client: &Client, generation: u64, seq: u64) -> bool {
        let mut live = client.live.lock();
        if live.generation != generation {
            return false;
        }
        if seq > live.cursors.delivered {
            live.cursors.delivered = seq;
            self.dirty.store(true, Ordering::Relaxed);
        }
        true
    }

    /// A native client acknowledged every result up to `seq` (capped at what it was
    /// delivered).
    pub(crate) fn ack(&self, client: &Client, seq: u64) {
        let mut live = client.live.lock();
        let seq = seq.min(live.cursors.delivered);
        if seq > live.cursors.acked {
            live.cursors.acked = seq;
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Detaches the stream `generation` of `client` if it is still the attached one.
    async fn detach(&self, client: &Client, generation: u64) {
        let mut attached = client.attached.lock().await;
        if attached
            .as_ref()
            .is_some_and(|a| a.generation == generation)
        {
            *attached = None;
        }
    }

    /// Offers every attached stream the results in the mailbox above what it was
    /// sent: after a gap in live routing (a gateway's pub/sub subscription was down),
    /// this delivers what was published meanwhile.
    ///
    /// # Errors
    /// The mailbox cannot be read (the streams stay attached; try again later).
    pub async fn catch_up(&self) -> Result<()> {
        let clients: Vec<Arc<Client>> = self.clients.lock().values().cloned().collect();
        for client in clients {
            let Some(sent) = client.attached.lock().await.as_ref().map(|a| a.sent) else {
                continue;
            };
            // The home entry may be gone too (Redis lost it): routing must find us.
            let replay = self.claim_and_replay(&client.id, sent).await?;
            for result in &replay.results {
                self.offer(&client, result).await;
            }
        }
        Ok(())
    }

    /// Claims again every attached client in the mailbox (with Redis: renews each
    /// client's home entry, which expires `streams.max_replay_age` after it was set),
    /// every `interval` until `stop` turns true.
    pub async fn renew_claims_periodically(
        self: Arc<Self>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(interval) => {}
            }
            let clients: Vec<Arc<Client>> = self.clients.lock().values().cloned().collect();
            for client in clients {
                if client.attached.lock().await.is_none() {
                    continue;
                }
                if let Err(e) = self.mailbox.claim(&client.id).await {
                    self.count(ErrorKind::Claim, 1);
                    tracing::warn!(error = %e, client_id = %client.id, "cannot renew a client's claim; retrying later");
                }
            }
        }
    }

    /// Closes every attached stream with `status` (shutdown).
    pub(crate) async fn close_all(&self, status: &Status) {
        let clients: Vec<Arc<Client>> = self.clients.lock().values().cloned().collect();
        for client in clients {
            if let Some(old) = client.attached.lock().await.take() {
                old.close(status.clone());
            }
        }
    }

    fn client(&self, client_id: &str) -> Arc<Client> {
        let mut clients = self.clients.lock();
        let client = clients
            .entry(client_id.to_owned())
            .or_insert_with(|| Arc::new(Client::new(client_id.to_owned(), Cursors::default())));
        Arc::clone(client)
    }

    /// Offers one result to the attached stream of its client.
    async fn offer(&self, client: &Client, result: &ResultRecord) {
        let mut attached = client.attached.lock().await;
        let Some(stream) = attached.as_mut() else {
            return;
        };
        let seq = result_seq(result);
        if seq <= stream.sent {
            return;
        }
        let item = Outgoing::Reply(Reply::Result(result.clone()));
        let delivered = match stream.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(item)) => {
                let wait = self.limits.slow_client_timeout;
                match tokio::time::timeout(wait, stream.tx.send(item)).await {
                    Ok(sent) => sent.is_ok(),
                    Err(_) => {
                        self.count(ErrorKind::SlowClient, 1);
                        tracing::info!(client_id = %client.id, "stream client too slow: disconnecting it");
                        if let Some(slow) = attached.take() {
                            slow.close(Status::resource_exhausted(
                                "client too slow; reconnect to resume",
                            ));
                        }
                        return;
                    }
                }
            }
        };
        match attached.as_mut() {
            Some(stream) if delivered => stream.sent = seq,
            _ => *attached = None,
        }
    }

    fn count(&self, kind: ErrorKind, n: u64) {
        self.telemetry.error_n(Component::Streams, kind, n);
    }

    /// Writes the cursors to `state_dir` now (atomically), if there is one.
    ///
    /// # Errors
    /// The file cannot be written (the previous one stays intact).
    pub async fn persist(&self) -> Result<()> {
        self.dirty.store(false, Ordering::Relaxed);
        let snapshot = self.snapshot();
        let changed: Vec<(String, u64)> = {
            let shared = self.shared.lock();
            snapshot
                .iter()
                .filter(|(id, c)| shared.get(*id).is_none_or(|s| *s < c.delivered))
                .map(|(id, c)| (id.clone(), c.delivered))
                .collect()
        };
        let outcome = async {
            if let Some(dir) = &self.state_dir {
                cursors::save(dir.clone(), snapshot).await?;
            }
            self.mailbox.save_delivered(&changed).await?;
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => self.shared.lock().extend(changed),
            Err(_) => self.dirty.store(true, Ordering::Relaxed),
        }
        outcome
    }

    /// Persists the cursors every `interval` while they change, until `stop` turns
    /// true; then once more.
    pub(crate) async fn persist_periodically(
        self: Arc<Self>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                () = tokio::time::sleep(interval) => {}
            }
            if self.dirty.load(Ordering::Relaxed) {
                self.persist_or_log().await;
            }
        }
        self.persist_or_log().await;
    }

    async fn persist_or_log(&self) {
        if let Err(e) = self.persist().await {
            self.count(ErrorKind::Persist, 1);
            tracing::warn!(error = %e, "cannot persist the stream cursors; retrying");
        }
    }

    fn snapshot(&self) -> HashMap<String, Cursors> {
        let clients = self.clients.lock();
        clients
            .iter()
            .map(|(id, c)| (id.clone(), c.live.lock().cursors))
            .filter(|(_, c)| *c != Cursors::default())
            .collect()
    }
}

impl Client {
    fn new(id: String, cursors: Cursors) -> Self {
        Client {
            id,
            live: Mutex::new(Live {
                generation: 0,
                cursors,
            }),
            attached: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl ResultRouter for Sessions {
    async fn route(&self, results: &[ResultRecord]) {
        for result in results {
            let client = self.clients.lock().get(&result.client_id).cloned();
            if let Some(client) = client {
                self.offer(&client, result).await;
            }
        }
    }
}

/// The seq the result of the event stored as `id` will carry (event position + 1, see
/// `datanexus_pipeline::results`): the offset for the embedded log and Kafka, the
/// order-preserving number of a Redis stream entry id.
pub(crate) fn event_seq(id: &RecordId) -> u64 {
    event_position(*id).1.saturating_add(1)
}
