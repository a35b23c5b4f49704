//! The gateway's subscription to its channel.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_results::ResultRouter;
use futures::StreamExt;
use prost::Message;
use tokio::sync::watch;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Delivers what arrives on `channel` to `sessions` until `stop` turns true,
/// resubscribing (with backoff) whenever the connection is lost. After every
/// successful subscription but the first, `resubscribed` runs: results published
/// while the subscription was down are only in the mailboxes, so the connected
/// clients must catch up from there.
pub async fn subscribe<F, Fut>(
    client: redis::Client,
    channel: String,
    sessions: Arc<dyn ResultRouter>,
    resubscribed: F,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn() -> Fut + Send,
    Fut: Future<Output = ()> + Send,
{
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        if *stop.borrow() {
            return;
        }
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            p = subscribed => p,
        };
        let mut pubsub = match pubsub {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, %channel, "cannot subscribe to the gateway channel; retrying");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        tracing::info!(%channel, "subscribed to the gateway channel");
        if !first {
            resubscribed().await;
        }
        first = false;
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                m = messages.next() => m,
            };
            let Some(message) = message else {
                tracing::warn!(%channel, "gateway channel subscription lost; resubscribing");
                break;
            };
            let results = decode(message.get_payload_bytes());
            if !results.is_empty() {
                sessions.route(&results).await;
            }
        }
    }
}

/// Length-delimited `ResultRecord`s; stops at the first undecodable one.
fn decode(mut bytes: &[u8]) -> Vec<ResultRecord> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match ResultRecord::decode_length_delimited(&mut bytes) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(error = %e, "undecodable result message on the gateway channel");
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_router_publishes() {
        let results: Vec<ResultRecord> = (0..3)
            .map(|i| ResultRecord {
                client_id: format!("c{i}"),
                event_offset: i,
                ..ResultRecord::default()
            })
            .collect();
        let mut message = Vec::new();
        for r in &results {
            r.encode_length_delimited(&mut message).unwrap();
        }
        assert_eq!(decode(&message), results);
        message.push(0xff);
        assert_eq!(decode(&message), results);
    }
}
