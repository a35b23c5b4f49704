//! Roles: which parts of Data Nexus one `serve` process runs, and the Redis result
//! fan-out that connects separate gateways to the forwarder.
//!
//! | role | servers (gRPC, HTTP) | workers | store |
//! |---|---|---|---|
//! | `all` | yes | sinkers, processors, forwarder | embedded, queries served |
//! | `gateway` | yes (ingest, streams) | none | none: queries answer 503 naming the `store` role |
//! | `processor` | yes (ingest works; queries 503) | processors | none |
//! | `store` | yes (queries served here) | sinkers, forwarder | embedded |
//!
//! The fan-out is used whenever Redis is configured for it (`[redis]`, or else the
//! Redis broker's URL); with the embedded broker and no `[redis]`, results are
//! routed inside the process.

use async_trait::async_trait;
use datanexus_config::{BrokerConfig, Config, Role};
use datanexus_model::Point;
use datanexus_pipeline::Workers;
use datanexus_store::{
    AggregateQuery, AggregateResult, DatasetInfo, Error, EventPage, EventQuery, FlushReport,
    Latest, QueryResult, Result, SeriesQuery, Store, StoredEvent,
};

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

/// The stand-in store of the roles without one: writes are refused (no worker of
/// such a role writes), reads answer 503 with where to send them, readiness is fine.
#[derive(Debug)]
pub(crate) struct Unserved {
    message: String,
}

impl Unserved {
    pub(crate) fn new(role: Role) -> Self {
        Unserved {
            message: format!(
                "this process runs role `{}`: queries are served by the process with role \
                 `store` (or `all`)",
                role.as_str()
            ),
        }
    }

    fn refuse<T>(&self) -> Result<T> {
        Err(Error::Unavailable(self.message.clone()))
    }
}

#[async_trait]
impl Store for Unserved {
    fn name(&self) -> &'static str {
        "none"
    }

    async fn write_points(&self, _points: &[Point]) -> Result<()> {
        self.refuse()
    }

    async fn write_events(&self, _events: &[StoredEvent]) -> Result<()> {
        self.refuse()
    }

    async fn flush(&self) -> Result<FlushReport> {
        Ok(FlushReport::default())
    }

    async fn query(&self, _query: &SeriesQuery) -> Result<QueryResult> {
        self.refuse()
    }

    async fn aggregate(&self, _query: &AggregateQuery) -> Result<AggregateResult> {
        self.refuse()
    }

    async fn events(&self, _query: &EventQuery) -> Result<EventPage> {
        self.refuse()
    }

    async fn datasets(&self) -> Result<Vec<DatasetInfo>> {
        self.refuse()
    }

    async fn latest(&self) -> Result<Vec<Latest>> {
        self.refuse()
    }

    async fn ready(&self) -> Result<()> {
        Ok(())
    }

    async fn enforce_retention(&self) -> Result<()> {
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        Ok(())
    }
}
