//! The registry of client event streams: which client is connected on which stream,
//! what it has been sent, and the cursors that say where it resumes. (The request side
//! of a stream — appending its events — is the front end's.)
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
//! Clients are forgotten (with their cursors) once no stream of theirs was attached
//! for `max_replay_age`: every result they could still be replayed is older than
//! that, so a cursor no longer changes what a reconnect gets.
//!
//! Cursors (appended to a journal every second while they change, see `cursors.rs`, and the
//! `delivered` ones also shared through the [`Mailbox`], so that a `nimbus` client that
//! reconnects to another gateway resumes where the first one left off): `delivered` = the highest seq a stream handed
//! to the transport (the `nimbus` resume point: results written into a stream that then
//! broke may be lost in transit, at-most-once for those; results still buffered are
//! replayed) and `acked` = the highest seq a `datanexus.v1.EventStream` client
//! acknowledged (the native resume point, together with `Hello.resume_after`: nothing
//! is lost, every result is replayed until acknowledged).
//!

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::cursors::{Change, Cursors, Journal};
use crate::mailbox::{Mailbox, Replay, ResultRouter};
use crate::outbound::{Outbound, Outgoing, Reply};
use crate::record::result_seq;
use crate::{EndCode, Result, StreamEnd};
use async_trait::async_trait;
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_telemetry::{Component, ErrorKind, Telemetry};
use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

/// Which protocol a stream speaks: it decides the resume cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `nimbus.NimbusService`: resume after the last result handed to the transport.
    Nimbus,
    /// `datanexus.v1.EventStream`: resume after max(`resume_after`, acknowledged).
    Native {
        /// `Hello.resume_after`.
        resume_after: u64,
    },
}

/// One client's state.
pub struct Client {
    pub(crate) id: String,
    /// Its cursors changed since the last persist.
    dirty: AtomicBool,
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
    close: Option<oneshot::Sender<StreamEnd>>,
    /// The highest result seq put in this stream's buffer (or replayed to it).
    sent: u64,
}

impl Attached {
    fn close(mut self, end: StreamEnd) {
        if let Some(close) = self.close.take() {
            let _ = close.send(end);
        }
    }
}

/// Persist intervals between two looks for idle clients when nothing else changes.
const EVICTION_TICKS: u32 = 10;

/// Settings of the registry (the front end builds them from its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Where the cursor journal is kept (`cursors.log`); `None` keeps cursors in
    /// memory only.
    pub state_dir: Option<PathBuf>,
    /// Most stored results replayed to a reconnecting client (the newest are kept); 0
    /// disables replay.
    pub max_replay_results: usize,
    /// Results older than this are not replayed, and clients unseen this long are
    /// forgotten.
    pub max_replay_age: Duration,
    /// Items buffered per connected stream before its client counts as slow.
    pub channel_capacity: usize,
    /// How long routing waits for room in a slow client's full buffer before it ends
    /// the stream with `RESOURCE_EXHAUSTED`.
    pub slow_client_timeout: Duration,
}

/// Limits of the streams (from [`SessionOptions`]).
#[derive(Debug, Clone, Copy)]
struct StreamLimits {
    max_replay_results: usize,
    max_replay_age: Duration,
    channel_capacity: usize,
    slow_client_timeout: Duration,
}

/// The registry of client streams; the [`ResultRouter`] the pipeline's forwarder
/// delivers results through (the front end's state holds one).
pub struct Sessions {
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Where a reattaching client's results are read back from.
    mailbox: Arc<dyn Mailbox>,
    telemetry: Arc<Telemetry>,
    limits: StreamLimits,
    next_generation: AtomicU64,
    /// Where the cursors are persisted, if anywhere.
    journal: Option<Journal>,
    /// Some client's cursors changed since the last persist.
    dirty: AtomicBool,
    /// The delivered cursors last shared through the mailbox.
    shared: Mutex<HashMap<String, u64>>,
    /// Clients forgotten whose eviction is not in the journal yet.
    pending_evictions: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("clients", &self.clients.lock().len())
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// The registry, with the cursors persisted in `options.state_dir` (if any).
    ///
    /// # Errors
    /// The cursor journal exists but cannot be read.
    pub async fn open(
        mailbox: Arc<dyn Mailbox>,
        telemetry: Arc<Telemetry>,
        options: &SessionOptions,
    ) -> Result<Arc<Sessions>> {
        let (journal, loaded) = match &options.state_dir {
            Some(dir) => {
                let (journal, loaded) = Journal::open(dir.clone(), now_ns()).await?;
                (Some(journal), loaded)
            }
            None => (None, HashMap::new()),
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
                channel_capacity: options.channel_capacity.max(1),
                slow_client_timeout: options.slow_client_timeout,
            },
            next_generation: AtomicU64::new(0),
            journal,
            dirty: AtomicBool::new(false),
            shared: Mutex::new(HashMap::new()),
            pending_evictions: Mutex::new(Vec::new()),
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
    pub async fn attach(self: &Arc<Self>, client_id: &str, protocol: Protocol) -> Result<Outbound> {
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
            old.close(StreamEnd::new(
                EndCode::Aborted,
                format!("another stream with client_id {client_id:?} took over"),
            ));
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
        self.mailbox
            .replay(
                client_id,
                after_seq,
                self.limits.max_replay_results,
                min_processed_ns,
            )
            .await
    }

    /// Makes `generation` the live stream of `client` and returns its resume cursor.
    fn take_over(&self, client: &Client, generation: u64, protocol: Protocol) -> u64 {
        let mut live = client.live.lock();
        live.generation = generation;
        live.cursors.seen_ns = now_ns();
        self.touch(client);
        match protocol {
            Protocol::Nimbus => live.cursors.delivered,
            Protocol::Native { resume_after } => {
                live.cursors.acked = live.cursors.acked.max(resume_after);
                live.cursors.acked
            }
        }
    }

    /// Records that the stream `generation` of `client` handed result `seq` to the
    /// transport. False when a newer stream took over (the result must not be sent).
    pub(crate) fn mark_delivered(&self, client: &Client, generation: u64, seq: u64) -> bool {
        let mut live = client.live.lock();
        if live.generation != generation {
            return false;
        }
        if seq > live.cursors.delivered {
            live.cursors.delivered = seq;
            self.touch(client);
        }
        true
    }

    /// A native client acknowledged every result up to `seq` (capped at what it was
    /// delivered).
    pub fn ack(&self, client: &Client, seq: u64) {
        let mut live = client.live.lock();
        let seq = seq.min(live.cursors.delivered);
        if seq > live.cursors.acked {
            live.cursors.acked = seq;
            self.touch(client);
        }
    }

    /// Detaches the stream `generation` of `client` if it is still the attached one.
    pub(crate) async fn detach(&self, client: &Client, generation: u64) {
        let mut attached = client.attached.lock().await;
        if attached
            .as_ref()
            .is_some_and(|a| a.generation == generation)
        {
            *attached = None;
            self.unattached(client);
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

    /// Closes every attached stream with `end` (shutdown).
    pub async fn close_all(&self, end: &StreamEnd) {
        let clients: Vec<Arc<Client>> = self.clients.lock().values().cloned().collect();
        for client in clients {
            if let Some(old) = client.attached.lock().await.take() {
                old.close(end.clone());
                self.unattached(&client);
            }
        }
    }

    /// The client `client_id`, created if unknown, marked seen now — under the map's
    /// lock, so eviction (which holds it too) cannot forget a client being attached.
    fn client(&self, client_id: &str) -> Arc<Client> {
        let mut clients = self.clients.lock();
        let client = clients
            .entry(client_id.to_owned())
            .or_insert_with(|| Arc::new(Client::new(client_id.to_owned(), Cursors::default())));
        client.live.lock().cursors.seen_ns = now_ns();
        Arc::clone(client)
    }

    /// Notes that `client` has no stream any more from now (eviction counts from here).
    fn unattached(&self, client: &Client) {
        client.live.lock().cursors.seen_ns = now_ns();
        self.touch(client);
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
                        self.unattached(client);
                        if let Some(slow) = attached.take() {
                            slow.close(StreamEnd::new(
                                EndCode::ResourceExhausted,
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
            _ => {
                *attached = None;
                self.unattached(client);
            }
        }
    }

    fn count(&self, kind: ErrorKind, n: u64) {
        self.telemetry.error_n(Component::Streams, kind, n);
    }

    /// Marks the cursors of `client` as changed.
    fn touch(&self, client: &Client) {
        client.dirty.store(true, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Forgets the clients without a stream that were last seen more than
    /// `max_replay_age` ago; returns their ids.
    fn evict_idle(&self) -> Vec<String> {
        let age = i64::try_from(self.limits.max_replay_age.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = now_ns().saturating_sub(age);
        let mut clients = self.clients.lock();
        let idle: Vec<String> = clients
            .iter()
            .filter(|(_, c)| {
                // A locked `attached` means a stream is attaching or routed to: in use.
                let unattached = c.attached.try_lock().is_ok_and(|a| a.is_none());
                unattached && c.live.lock().cursors.seen_ns < cutoff
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            clients.remove(id);
        }
        drop(clients);
        let mut shared = self.shared.lock();
        for id in &idle {
            shared.remove(id);
        }
        idle
    }

    /// Forgets idle clients, then appends the cursors that changed to the journal (if
    /// there is one) and shares the raised `delivered` cursors through the mailbox.
    ///
    /// # Errors
    /// The journal cannot be written, or the mailbox is unreachable (the changes and
    /// evictions are kept for the next persist).
    pub async fn persist(&self) -> Result<()> {
        self.dirty.store(false, Ordering::Relaxed);
        let evicted = self.evict_idle();
        let evictions: Vec<String> = {
            let mut pending = self.pending_evictions.lock();
            pending.extend(evicted);
            pending.clone()
        };
        let changed: Vec<(Arc<Client>, Cursors)> = {
            let clients = self.clients.lock();
            clients
                .values()
                .filter(|c| c.dirty.swap(false, Ordering::Relaxed))
                .map(|c| (Arc::clone(c), c.live.lock().cursors))
                .collect()
        };
        let raised: Vec<(String, u64)> = {
            let shared = self.shared.lock();
            changed
                .iter()
                .filter(|(c, cur)| shared.get(&c.id).is_none_or(|s| *s < cur.delivered))
                .map(|(c, cur)| (c.id.clone(), cur.delivered))
                .collect()
        };
        let outcome = async {
            if let Some(journal) = &self.journal {
                let changes: Vec<Change> = evictions
                    .iter()
                    .map(|id| Change::Evict(id.clone()))
                    .chain(
                        changed
                            .iter()
                            .map(|(c, cur)| Change::Set(c.id.clone(), *cur)),
                    )
                    .collect();
                let live = self.clients.lock().len();
                if journal.compaction_due(changes.len(), live) {
                    journal.rewrite(self.snapshot()).await?;
                } else {
                    journal.append(changes).await?;
                }
            }
            self.mailbox.save_delivered(&raised).await?;
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                self.shared.lock().extend(raised);
                self.pending_evictions
                    .lock()
                    .retain(|id| !evictions.contains(id));
            }
            Err(_) => {
                // Keep the changes for the next persist.
                for (c, _) in &changed {
                    c.dirty.store(true, Ordering::Relaxed);
                }
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
        outcome
    }

    /// Clients known now (tests and diagnostics).
    pub fn client_count(&self) -> usize {
        self.clients.lock().len()
    }

    /// Persists the cursors every `interval` while they change (and looks for idle
    /// clients to forget at least every [`EVICTION_TICKS`] intervals), until `stop`
    /// turns true; then once more.
    pub async fn persist_periodically(
        self: Arc<Self>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                () = tokio::time::sleep(interval) => {}
            }
            ticks += 1;
            if self.dirty.load(Ordering::Relaxed) || ticks >= EVICTION_TICKS {
                ticks = 0;
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
            .collect()
    }
}

impl Client {
    fn new(id: String, cursors: Cursors) -> Self {
        Client {
            id,
            dirty: AtomicBool::new(false),
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
    /// Each client's results in order, the clients at once: a slow client delays the
    /// others by at most one `slow_client_timeout` per batch, not one per slow client.
    async fn route(&self, results: &[ResultRecord]) {
        let mut by_client: Vec<(Arc<Client>, Vec<&ResultRecord>)> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for result in results {
            let i = match index.get(result.client_id.as_str()) {
                Some(i) => *i,
                None => {
                    let Some(client) = self.clients.lock().get(&result.client_id).cloned() else {
                        continue;
                    };
                    by_client.push((client, Vec::new()));
                    index.insert(&result.client_id, by_client.len() - 1);
                    by_client.len() - 1
                }
            };
            by_client[i].1.push(result);
        }
        futures::future::join_all(by_client.iter().map(|(client, results)| async move {
            for result in results {
                self.offer(client, result).await;
            }
        }))
        .await;
    }
}

/// The wall clock, in ns since the Unix epoch.
fn now_ns() -> i64 {
    datanexus_model::time::now_ns()
}
