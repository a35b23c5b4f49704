//! The forwarder's side: mailbox, home lookup, publish.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_results::ResultRouter;
use prost::Message;
use redis::aio::ConnectionManager;

use crate::{FanoutOptions, Keys, Result, connect};

/// Longest wait between retries of a failed mailbox write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Routes results to the gateways through Redis (see the crate docs).
#[derive(Clone)]
pub struct RedisRouter {
    conn: ConnectionManager,
    keys: Keys,
    max_results: usize,
    max_age_ms: u64,
}

impl std::fmt::Debug for RedisRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRouter")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisRouter {
    /// Connects.
    ///
    /// # Errors
    /// An invalid URL or an unreachable server.
    pub async fn connect(options: &FanoutOptions) -> Result<Self> {
        let (_, conn) = connect(options).await?;
        Ok(RedisRouter {
            conn,
            keys: Keys::new(&options.prefix),
            max_results: options.max_results.max(1),
            max_age_ms: u64::try_from(options.max_age.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Writes the mailboxes and reads the homes, in one round trip; returns the results
    /// grouped by home channel.
    async fn store_and_locate(
        &self,
        results: &[ResultRecord],
    ) -> redis::RedisResult<BTreeMap<String, Vec<u8>>> {
        let mut clients: Vec<&str> = results.iter().map(|r| r.client_id.as_str()).collect();
        clients.sort_unstable();
        clients.dedup();
        let mut pipe = redis::pipe();
        for r in results {
            pipe.cmd("XADD")
                .arg(self.keys.mailbox(&r.client_id))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_results)
                .arg("*")
                .arg("r")
                .arg(r.encode_to_vec())
                .ignore();
        }
        for client in &clients {
            pipe.cmd("PEXPIRE")
                .arg(self.keys.mailbox(client))
                .arg(self.max_age_ms)
                .ignore();
        }
        let home_keys: Vec<String> = clients.iter().map(|c| self.keys.home(c)).collect();
        pipe.cmd("MGET").arg(&home_keys);
        let mut conn = self.conn.clone();
        let (homes,): (Vec<Option<String>>,) = pipe.query_async(&mut conn).await?;
        let home_of: BTreeMap<&str, &str> = clients
            .iter()
            .zip(&homes)
            .filter_map(|(c, h)| Some((*c, h.as_deref()?)))
            .collect();
        let mut messages: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for r in results {
            if let Some(home) = home_of.get(r.client_id.as_str()) {
                let message = messages.entry((*home).to_owned()).or_default();
                // Encoding into a Vec cannot fail for lack of room.
                let _ = r.encode_length_delimited(message);
            }
        }
        Ok(messages)
    }

    async fn publish(&self, messages: &BTreeMap<String, Vec<u8>>) -> redis::RedisResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (channel, message) in messages {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }
}

#[async_trait]
impl ResultRouter for RedisRouter {
    /// Retries the mailbox write, then the publish, until each succeeds (the forwarder
    /// acknowledges the results only after this returns). A publish is retried rather
    /// than dropped: a gateway whose subscription stayed up would not catch up from
    /// the mailbox, and a later result would raise the stream past the missed one.
    /// Repeated publishes are harmless: gateways drop results they already sent.
    async fn route(&self, results: &[ResultRecord]) {
        if results.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(50);
        let messages = loop {
            match self.store_and_locate(results).await {
                Ok(messages) => break messages,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write result mailboxes to redis; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let mut backoff = Duration::from_millis(50);
        while let Err(e) = self.publish(&messages).await {
            tracing::warn!(error = %e, "cannot publish results to the gateways; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
