//! Results of stream events, as their own concept: the record and its per-client
//! sequence number ([`record`]), how results reach clients ([`ResultRouter`], the
//! [`Mailbox`] a reattaching stream replays from, [`StoreMailbox`] over the store's
//! (client, seq) index), and the registry of connected client streams ([`Sessions`]:
//! routing, replay, takeover, slow clients, resume cursors, eviction of clients gone
//! longer than the replay age). No transport here: streams end with a [`StreamEnd`]
//! that the gRPC front end maps to its status.
//!
//! # Layout
//! - [`record`]: seqs, event positions, the stored form ([`datanexus_store::StoredResult`]).
//! - `mailbox.rs`: [`ResultRouter`], [`Mailbox`], [`Replay`], [`StoreMailbox`], [`Kept`].
//! - `sessions.rs`: [`Sessions`], the registry; `outbound.rs`: [`Outbound`], the
//!   response side of one stream; `cursors.rs`: the cursor journal.
//! - `error.rs`: [`Error`], [`StreamEnd`].
//! - `tests.rs`: the registry over a real embedded store.

mod cursors;
mod error;
mod mailbox;
mod outbound;
pub mod record;
mod sessions;
#[cfg(test)]
mod tests;

pub use error::{EndCode, Error, Result, StreamEnd};
pub use mailbox::{Kept, Mailbox, Replay, ResultRouter, StoreMailbox};
pub use outbound::{Outbound, Outgoing, Rejection, Reply};
pub use record::{event_position, event_seq, result_seq};
pub use sessions::{Client, Protocol, SessionOptions, Sessions};
