//! Periodic tasks: retention (store and broker) and lag publication (of every group
//! whose workers run in this process).

use std::sync::Arc;

use datanexus_broker::Broker;
use datanexus_store::Store;
use datanexus_telemetry::{Component, ErrorKind, GroupLabels, Telemetry};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::PipelineConfig;

pub(crate) async fn run(
    broker: Arc<dyn Broker>,
    store: Option<Arc<dyn Store>>,
    telemetry: Arc<Telemetry>,
    config: PipelineConfig,
    groups: Vec<(String, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retention = tokio::time::interval(config.retention_interval);
    let mut lag = tokio::time::interval(config.lag_interval);
    retention.set_missed_tick_behavior(MissedTickBehavior::Delay);
    lag.set_missed_tick_behavior(MissedTickBehavior::Delay);
    retention.tick().await;
    loop {
        tokio::select! {
            () = crate::stopped(&mut stop) => return,
            _ = retention.tick() => {
                if let Some(Err(e)) = match &store {
                    Some(store) => Some(store.enforce_retention().await),
                    None => None,
                } {
                    telemetry.error(Component::Retention, ErrorKind::Store);
                    tracing::warn!(error = %e, "store retention failed");
                }
                // The broker never deletes what a group has not committed, so data the
                // sinker has not stored yet is never dropped here.
                if let Err(e) = broker.enforce_retention().await {
                    telemetry.error(Component::Retention, ErrorKind::Broker);
                    tracing::warn!(error = %e, "broker retention failed");
                }
            }
            _ = lag.tick() => publish_lag(&*broker, &telemetry, &groups).await,
        }
    }
}

/// Publishes the lag of every (topic, group) pair.
async fn publish_lag(broker: &dyn Broker, telemetry: &Telemetry, groups: &[(String, String)]) {
    for (topic, group) in groups {
        match broker.lag(topic, group).await {
            Ok(parts) => {
                let total: u64 = parts.iter().map(|p| p.lag).sum();
                let labels = GroupLabels {
                    topic: topic.clone(),
                    group: group.clone(),
                };
                telemetry
                    .consumer_lag
                    .get_or_create(&labels)
                    .set(i64::try_from(total).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::debug!(error = %e, %topic, %group, "lag unavailable"),
        }
    }
}
