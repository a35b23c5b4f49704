//! Roles: which parts of Data Nexus one `serve` process runs, and the Redis result
//! fan-out that connects separate gateways to the forwarder.
//!
//! | role | servers (gRPC, HTTP) | workers | store |
//! |---|---|---|---|
//! | `all` | yes | sinkers, processors, forwarder | embedded, queries served |
//! | `gateway` | yes (ingest, streams) | none | none opened: queries answer 503 naming the `store` role |
//! | `processor` | yes (ingest works; queries 503) | processors | none opened |
//! | `store` | yes (queries served here) | sinkers, forwarder | embedded |
//!
//! The fan-out is used whenever Redis is configured for it (`[redis]`, or else the
//! Redis broker's URL); with the embedded broker and no `[redis]`, results are
//! routed inside the process.

use datanexus_config::{BrokerConfig, Config, Role};
use datanexus_pipeline::Workers;

/// The workers of `role`.
pub(crate) fn workers(role: Role) -> Workers {
    match role {
        Role::All => Workers::ALL,
        Role::Gateway => Workers::NONE,
        Role::Processor => Workers::PROCESSORS,
        Role::Store => Workers::STORE,
    }
}

/// Whether `role` opens the store.
pub(crate) fn has_store(role: Role) -> bool {
    matches!(role, Role::All | Role::Store)
}

/// The Redis URL of the result fan-out, if any: `[redis].url`, else the Redis broker's.
pub(crate) fn fanout_url(config: &Config) -> Option<String> {
    if let Some(redis) = &config.redis {
        return Some(redis.url.clone());
    }
    match &config.broker {
        BrokerConfig::Redis(r) => Some(r.url.clone()),
        _ => None,
    }
}
