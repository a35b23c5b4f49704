//! [`Outbound`]: the response side of one client stream.
//!
//! It yields, in this order of priority: the replayed results (oldest first), then
//! what arrives in the stream's bounded buffer — results routed by the forwarder and
//! the replies the request side produces itself ([`Reply::Accepted`],
//! [`Reply::Rejected`]). Every result whose seq is not above the last one yielded is a
//! duplicate and dropped.
//!
//! A [`Rejection`] (a request the gateway answers itself: bad input, overload) is held
//! back until the result of the event sent just before it (`after_seq`) was yielded,
//! so a client sees its answers in request order.
//!
//! The stream ends
//! - with the [`StreamEnd`] sent on its close channel (takeover `Aborted`, slow client
//!   `ResourceExhausted`, shutdown `Unavailable`), at once: buffered results are not
//!   sent and not marked delivered, so they are replayed on reconnect;
//! - with `OK` once the client half-closed ([`Outgoing::Finished`]) and every event it
//!   sent was answered;
//! - with the end the request side reports ([`Outgoing::Abort`]).
//!
//! Dropping it (the client went away) detaches it from the registry.

use std::collections::VecDeque;
use std::sync::Arc;

use datanexus_proto::datanexus::v1::ResultRecord;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::record::result_seq;
use crate::sessions::{Client, Sessions};
use crate::{EndCode, StreamEnd};

/// What the stream yields to its protocol handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A result, replayed or routed.
    Result(ResultRecord),
    /// (native) An event is durable; its result will carry `seq`.
    Accepted {
        /// The client's `Event.correlation_id`.
        correlation_id: u64,
        /// The seq of its result.
        seq: u64,
    },
    /// A request the gateway answered itself.
    Rejected(Rejection),
}

/// A request answered in-band by the gateway, without a result from the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Yield only after the result with this seq (0: at once).
    pub after_seq: u64,
    /// The request's event name.
    pub event_name: String,
    /// The request's number.
    pub number: i32,
    /// The request's correlation id (native; 0 for nimbus).
    pub correlation_id: u64,
    /// Why (shown to the client).
    pub message: String,
    /// When the request was received (ns since the Unix epoch).
    pub received_ns: i64,
}

/// What goes through a stream's buffer.
#[derive(Debug)]
pub enum Outgoing {
    /// Something to yield.
    Reply(Reply),
    /// The client half-closed after sending events up to `last_seq`.
    Finished {
        /// The seq of its last event (0: none).
        last_seq: u64,
    },
    /// End the stream with this status.
    Abort(StreamEnd),
}

/// The buffer, a sender into it (for the request side), and the close channel.
pub(super) type Channels = (
    mpsc::Sender<Outgoing>,
    mpsc::Receiver<Outgoing>,
    oneshot::Receiver<StreamEnd>,
);

/// The response side of one attached stream.
pub struct Outbound {
    sessions: Arc<Sessions>,
    client: Arc<Client>,
    generation: u64,
    replay: VecDeque<ResultRecord>,
    tx: mpsc::Sender<Outgoing>,
    rx: mpsc::Receiver<Outgoing>,
    closed: Option<oneshot::Receiver<StreamEnd>>,
    /// The highest result seq yielded (or the resume cursor).
    high: u64,
    /// A routed result held back while older rejections go first.
    held: Option<ResultRecord>,
    deferred: VecDeque<Rejection>,
    finish_after: Option<u64>,
    done: bool,
}

impl Outbound {
    pub(crate) fn new(
        sessions: Arc<Sessions>,
        client: Arc<Client>,
        generation: u64,
        cursor: u64,
        replay: VecDeque<ResultRecord>,
        (tx, rx, closed): Channels,
    ) -> Self {
        Outbound {
            sessions,
            client,
            generation,
            replay,
            tx,
            rx,
            closed: Some(closed),
            high: cursor,
            held: None,
            deferred: VecDeque::new(),
            finish_after: None,
            done: false,
        }
    }

    /// A sender into this stream's buffer, for the request side.
    pub fn sender(&self) -> mpsc::Sender<Outgoing> {
        self.tx.clone()
    }

    /// The client this stream belongs to.
    pub fn client(&self) -> Arc<Client> {
        Arc::clone(&self.client)
    }

    /// The stream of replies, each mapped by `f`.
    pub fn into_stream<T: Send + 'static>(
        self,
        f: impl Fn(Reply) -> T + Send + 'static,
    ) -> impl Stream<Item = Result<T, StreamEnd>> + Send + 'static {
        futures::stream::unfold((self, f), |(mut out, f)| async move {
            let item = out.next().await?;
            Some((item.map(&f), (out, f)))
        })
    }

    /// The next reply, a status that ends the stream, or `None` at its end.
    async fn next(&mut self) -> Option<Result<Reply, StreamEnd>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(reply) = self.ready() {
                return Some(reply);
            }
            if self.finish_after.is_some_and(|last| self.high >= last) && self.deferred.is_empty() {
                self.done = true;
                return None;
            }
            let closed = self.closed.as_mut();
            let incoming = tokio::select! {
                biased;
                status = async {
                    match closed {
                        Some(rx) => rx.await.ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    self.done = true;
                    return status.map(Err);
                }
                incoming = self.rx.recv() => incoming,
            };
            match incoming {
                Some(outgoing) => {
                    if let Some(reply) = self.accept(outgoing) {
                        return Some(reply);
                    }
                }
                None => self.done = true,
            }
        }
    }

    /// What can be yielded without waiting: replayed results, due rejections, a held
    /// result.
    fn ready(&mut self) -> Option<Result<Reply, StreamEnd>> {
        while let Some(result) = self.replay.pop_front() {
            if let Some(reply) = self.deliver(result) {
                return Some(reply);
            }
        }
        let horizon = self.held.as_ref().map_or(self.high, |r| {
            self.high.max(result_seq(r).saturating_sub(1))
        });
        if self
            .deferred
            .front()
            .is_some_and(|d| d.after_seq <= horizon)
        {
            return self.deferred.pop_front().map(|d| Ok(Reply::Rejected(d)));
        }
        let held = self.held.take()?;
        self.deliver(held)
    }

    /// Takes one item of the buffer; returns what to yield now, if anything.
    fn accept(&mut self, outgoing: Outgoing) -> Option<Result<Reply, StreamEnd>> {
        match outgoing {
            Outgoing::Reply(Reply::Result(result)) if self.deferred.is_empty() => {
                self.deliver(result)
            }
            Outgoing::Reply(Reply::Result(result)) => {
                // Rejections are waiting: let `ready` order them before this result.
                self.held = Some(result);
                self.ready()
            }
            Outgoing::Reply(Reply::Rejected(r))
                if self.deferred.is_empty() && r.after_seq <= self.high =>
            {
                Some(Ok(Reply::Rejected(r)))
            }
            Outgoing::Reply(Reply::Rejected(r)) => {
                self.deferred.push_back(r);
                None
            }
            Outgoing::Reply(accepted @ Reply::Accepted { .. }) => Some(Ok(accepted)),
            Outgoing::Finished { last_seq } => {
                self.finish_after = Some(last_seq);
                None
            }
            Outgoing::Abort(status) => {
                self.done = true;
                Some(Err(status))
            }
        }
    }

    /// Yields `result` unless it is a duplicate; ends the stream if a newer one took
    /// over.
    fn deliver(&mut self, result: ResultRecord) -> Option<Result<Reply, StreamEnd>> {
        let seq = result_seq(&result);
        if seq <= self.high {
            return None;
        }
        if !self
            .sessions
            .mark_delivered(&self.client, self.generation, seq)
        {
            self.done = true;
            return Some(Err(StreamEnd::new(
                EndCode::Aborted,
                format!(
                    "another stream with client_id {:?} took over",
                    self.client.id
                ),
            )));
        }
        self.high = seq;
        Some(Ok(Reply::Result(result)))
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let sessions = Arc::clone(&self.sessions);
        let client = Arc::clone(&self.client);
        let generation = self.generation;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { sessions.detach(&client, generation).await });
        }
    }
}
