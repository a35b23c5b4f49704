//! Result fan-out across gateway processes, over Redis (the Nimbus seed's design,
//! with a durable mailbox so that a client that moves to another gateway loses
//! nothing).
//!
//! When gateways, processors and the store run as separate processes, the forwarder
//! (in the store role) does not hold the clients' streams. For each batch of results
//! it ([`RedisRouter`], a [`ResultRouter`]), in one pipelined round trip:
//!
//! 1. appends each result to its client's **mailbox**, the stream
//!    `<prefix>:results:<client id>` (trimmed to about `max_results` entries, expiring
//!    `max_age` after the last write);
//! 2. reads each client's **home**, `<prefix>:home:<client id>`: the channel of the
//!    gateway its stream is attached to now;
//!
//! then publishes the results of each home gateway as one message on that gateway's
//! channel `<prefix>:gateway:<gateway id>` (length-delimited `ResultRecord`s). A
//! failed mailbox write or publish is retried with backoff (the results are not
//! acknowledged before). The home, not the event's `reply_to`, decides the channel:
//! the gateway a client sent an event through may no longer be the one it listens on.
//! Gateways renew the homes of their attached clients periodically, so a long-lived
//! stream never outlives its home entry.
//!
//! Each gateway ([`RedisMailbox`], a [`Mailbox`], plus [`subscribe`]) subscribes to its
//! own channel and hands what arrives to its session registry. When a client's stream
//! attaches, the gateway first makes itself the client's home ([`Mailbox::claim`]) and
//! then reads the client's mailbox for the replay. Because the forwarder writes the
//! mailbox before it reads the home, every result is either in that replay or
//! published to the new home: a client that reconnects to another gateway gets its
//! missed results and then the new ones. After its subscription is re-established
//! (Redis restarted), a gateway calls back so that connected clients catch up from
//! their mailboxes.

mod error;
mod keys;
mod mailbox;
mod router;
mod subscriber;

use std::time::Duration;

use datanexus_config::{BrokerConfig, Config, RedisConfig};

pub use datanexus_results::{Mailbox, ResultRouter};

pub use crate::error::{Error, Result};
pub use crate::keys::Keys;
pub use crate::mailbox::RedisMailbox;
pub use crate::router::RedisRouter;
pub use crate::subscriber::subscribe;

/// Settings shared by the router and the gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutOptions {
    /// Redis URL (`redis://` or `rediss://`, with db and password).
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// About how many results a client's mailbox keeps (`MAXLEN ~`).
    pub max_results: usize,
    /// A mailbox (and a home entry) expires this long after its last write.
    pub max_age: Duration,
    /// Deadline of one Redis command.
    pub command_timeout: Duration,
    /// With `rediss://`: PEM CA certificates to verify the server with instead of the
    /// system's trust store.
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Deadline of one Redis command of the fan-out.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

impl FanoutOptions {
    /// The fan-out of a process configured by `config`, when Redis is configured for it:
    /// `[redis]` (URL and prefix), else the Redis broker's URL; mailboxes keep
    /// `streams.max_replay_results` results for `streams.max_replay_age`. `None`
    /// without Redis (results are then routed inside the process).
    pub fn from_config(config: &Config) -> Option<Self> {
        let (url, prefix, tls_ca) = match (&config.redis, &config.broker) {
            (Some(redis), _) => (redis.url.clone(), redis.prefix.clone(), &redis.tls_ca),
            (None, BrokerConfig::Redis(broker)) => (
                broker.url.clone(),
                RedisConfig::default().prefix,
                &broker.tls_ca,
            ),
            (None, _) => return None,
        };
        let tls_ca = (!tls_ca.as_os_str().is_empty()).then(|| tls_ca.clone());
        Some(FanoutOptions {
            url,
            prefix,
            max_results: config.streams.max_replay_results,
            max_age: config.streams.max_replay_age,
            command_timeout: COMMAND_TIMEOUT,
            tls_ca,
        })
    }
}

/// Opens a connection manager (reconnects by itself) with the options' timeouts.
///
/// # Errors
/// An invalid URL or an unreachable server.
pub(crate) async fn connect(
    options: &FanoutOptions,
) -> Result<(redis::Client, redis::aio::ConnectionManager)> {
    let client =
        datanexus_broker::redis_streams::redis_client(&options.url, options.tls_ca.as_deref())
            .map_err(|e| Error::Config(format!("invalid Redis URL or TLS CA: {e}")))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.command_timeout))
        .set_response_timeout(Some(options.command_timeout));
    let manager = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(Error::redis)?;
    Ok((client, manager))
}
