//! The gateway's side of the mailbox: claiming a client and reading its results back.

use std::time::Duration;

use async_trait::async_trait;
use datanexus_proto::datanexus::v1::ResultRecord;
use datanexus_results::{Kept, Mailbox, Replay};
use prost::Message;
use redis::aio::ConnectionManager;

use crate::{Error, FanoutOptions, Keys, Result, connect};

/// Pause before the one retry after a dropped connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// Sets KEYS[1] to ARGV[1] (with a TTL of ARGV[2] ms) unless it already holds more.
const RAISE_SCRIPT: &str = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') \
    if tonumber(ARGV[1]) > v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
    else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 1";

/// Mailbox entries read per `XRANGE`.
const PAGE: usize = 1000;

/// A gateway's view of the Redis mailboxes (see the crate docs).
#[derive(Clone)]
pub struct RedisMailbox {
    conn: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    channel: String,
    max_age: Duration,
}

impl std::fmt::Debug for RedisMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisMailbox")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisMailbox {
    /// Connects as gateway `gateway_id`.
    ///
    /// # Errors
    /// An invalid URL or an unreachable server.
    pub async fn connect(options: &FanoutOptions, gateway_id: &str) -> Result<Self> {
        let (client, conn) = connect(options).await?;
        let keys = Keys::new(&options.prefix);
        Ok(RedisMailbox {
            channel: keys.channel(gateway_id),
            conn,
            client,
            keys,
            max_age: options.max_age,
        })
    }

    /// This gateway's channel (what its events carry as `reply_to`).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Runs `cmd`, once more after a dropped connection (the connection manager
    /// reconnects after the first failure, e.g. when Redis restarted).
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        match cmd.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                cmd.query_async(&mut conn).await.map_err(Error::redis)
            }
            Err(e) => Err(Error::redis(e)),
        }
    }

    /// The Redis client (for [`subscribe`](crate::subscribe)).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }
}

#[async_trait]
impl Mailbox for RedisMailbox {
    async fn claim(&self, client_id: &str) -> datanexus_results::Result<()> {
        let ms = u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.home(client_id))
            .arg(&self.channel)
            .arg("PX")
            .arg(ms.max(1));
        self.query::<()>(&cmd).await?;
        Ok(())
    }

    async fn replay(
        &self,
        client_id: &str,
        after_seq: u64,
        max: usize,
        min_processed_ns: i64,
    ) -> datanexus_results::Result<Replay> {
        if max == 0 {
            return Ok(Replay::default());
        }
        let key = self.keys.mailbox(client_id);
        let mut kept = Kept::new(after_seq, max, min_processed_ns);
        let mut start = "-".to_owned();
        loop {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&key).arg(&start).arg("+").arg("COUNT").arg(PAGE);
            let page: Vec<(String, Vec<(String, Vec<u8>)>)> = self.query(&cmd).await?;
            let read = page.len();
            let Some(last) = page.last().map(|(id, _)| id.clone()) else {
                break;
            };
            for (id, fields) in page {
                let Some((_, bytes)) = fields.into_iter().find(|(f, _)| f == "r") else {
                    continue;
                };
                match ResultRecord::decode(bytes.as_slice()) {
                    Ok(result) => kept.offer(result),
                    Err(e) => {
                        tracing::warn!(%key, %id, error = %e, "undecodable mailbox entry skipped")
                    }
                }
            }
            if read < PAGE {
                break;
            }
            start = format!("({last}");
        }
        Ok(kept.finish())
    }

    async fn delivered(&self, client_id: &str) -> datanexus_results::Result<Option<u64>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.delivered(client_id));
        Ok(self.query::<Option<u64>>(&cmd).await?)
    }

    async fn save_delivered(&self, cursors: &[(String, u64)]) -> datanexus_results::Result<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        let ms = u64::try_from(self.max_age.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut pipe = redis::pipe();
        for (client_id, seq) in cursors {
            // Only ever raise it: a slower gateway must not move a cursor back.
            pipe.cmd("EVAL")
                .arg(RAISE_SCRIPT)
                .arg(1)
                .arg(self.keys.delivered(client_id))
                .arg(*seq)
                .arg(ms)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(Error::redis)?;
        Ok(())
    }
}
