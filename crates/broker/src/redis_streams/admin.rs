//! Lag and retention of the Redis Streams backend.

use std::collections::HashMap;

use redis::{RedisError, RedisResult, Value};

use super::reply::{self, EntryId, GroupInfo};
use super::{Shared, from_redis};
use crate::{Error, PartitionLag, Result};

/// Whether a failed `XINFO` means the stream does not exist (nothing produced to the
/// partition and no group created on it yet).
fn is_missing_stream(e: &RedisError) -> bool {
    e.to_string().contains("no such key")
}

fn next_reply(
    replies: &mut impl Iterator<Item = RedisResult<Value>>,
    what: &str,
) -> Result<RedisResult<Value>> {
    replies
        .next()
        .ok_or_else(|| Error::Internal(format!("missing redis reply to {what}")))
}

/// The groups of a stream (none when the stream does not exist).
fn groups_of(reply: RedisResult<Value>) -> Result<Vec<GroupInfo>> {
    match reply {
        Ok(v) => reply::groups(&v),
        Err(e) if is_missing_stream(&e) => Ok(Vec::new()),
        Err(e) => Err(from_redis(e)),
    }
}

/// Per partition: `lag` + `pending` of `XINFO GROUPS` (Redis 7). When Redis cannot
/// compute the lag (entries deleted in the middle of the stream), the pending count if
/// nothing was added after the last delivered entry, else the stream length (an upper
/// bound).
pub(super) async fn lag(s: &Shared, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
    let partitions = s.partitions(topic).await?;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for p in 0..partitions {
        let key = s.stream_key(topic, p);
        pipe.cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .cmd("XLEN")
            .arg(&key);
    }
    let mut replies = s.pipeline_each(&pipe).await?.into_iter();
    let mut known = false;
    let mut out = Vec::new();
    for p in 0..partitions {
        let groups = groups_of(next_reply(&mut replies, "XINFO GROUPS")?)?;
        let len = next_reply(&mut replies, "XLEN")?.map_err(from_redis)?;
        let len = reply::int(&len)
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0);
        let lag = match groups.into_iter().find(|g| g.name == group.as_bytes()) {
            Some(info) => {
                known = true;
                match info.lag {
                    Some(lag) => lag.saturating_add(info.pending),
                    None => estimate(s, &s.stream_key(topic, p), &info, len).await?,
                }
            }
            // A group that has not reached this partition yet will start at its
            // beginning.
            None => len,
        };
        out.push(PartitionLag { partition: p, lag });
    }
    if known {
        Ok(out)
    } else {
        Err(Error::UnknownGroup {
            topic: topic.to_owned(),
            group: group.to_owned(),
        })
    }
}

async fn estimate(s: &Shared, key: &str, info: &GroupInfo, len: u64) -> Result<u64> {
    let mut after = redis::cmd("XRANGE");
    after
        .arg(key)
        .arg(format!("({}", info.last_delivered))
        .arg("+")
        .arg("COUNT")
        .arg(1);
    let undelivered = reply::entries("XRANGE", &s.query::<Value>(&after).await?)?;
    Ok(if undelivered.is_empty() {
        info.pending
    } else {
        len.max(info.pending)
    })
}

/// Trims each partition to what some group still needs: entries below the smallest,
/// over its groups, of the oldest pending id and the successor of the last delivered
/// id. Streams without groups are left to `MAXLEN`.
pub(super) async fn enforce_retention(s: &Shared) -> Result<()> {
    let topics: HashMap<String, String> =
        s.query(redis::cmd("HGETALL").arg(s.topics_key())).await?;
    let mut keys = Vec::new();
    for (topic, partitions) in &topics {
        match partitions.parse::<u32>() {
            Ok(n) => keys.extend((0..n).map(|p| s.stream_key(topic, p))),
            Err(_) => tracing::warn!(%topic, %partitions, "bad partition count in the topics hash"),
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for key in &keys {
        pipe.cmd("XINFO").arg("GROUPS").arg(key);
    }
    let mut replies = s.pipeline_each(&pipe).await?.into_iter();
    let mut streams: Vec<(String, Vec<GroupInfo>)> = Vec::new();
    for key in keys {
        let groups = groups_of(next_reply(&mut replies, "XINFO GROUPS")?)?;
        if !groups.is_empty() {
            streams.push((key, groups));
        }
    }
    let thresholds = thresholds(s, &streams).await?;
    let mut trim = redis::pipe();
    for (key, min_id) in &thresholds {
        trim.cmd("XTRIM")
            .arg(key)
            .arg("MINID")
            .arg(min_id.to_string());
    }
    let trimmed: i64 = s.pipeline(&trim).await?.iter().filter_map(reply::int).sum();
    if trimmed > 0 {
        tracing::info!(entries = trimmed, "retention trimmed acknowledged entries");
    }
    Ok(())
}

/// The `MINID` of each stream that has something to trim.
async fn thresholds(
    s: &Shared,
    streams: &[(String, Vec<GroupInfo>)],
) -> Result<Vec<(String, EntryId)>> {
    let mut pipe = redis::pipe();
    for (key, groups) in streams {
        for g in groups.iter().filter(|g| g.pending > 0) {
            pipe.cmd("XPENDING").arg(key).arg(&g.name[..]);
        }
    }
    let mut oldest = s.pipeline(&pipe).await?.into_iter();
    let mut out = Vec::new();
    for (key, groups) in streams {
        let mut min_id: Option<EntryId> = None;
        for g in groups {
            let mut keep = g.last_delivered.successor();
            if g.pending > 0 {
                let summary = oldest
                    .next()
                    .ok_or_else(|| Error::Internal("missing redis reply to XPENDING".into()))?;
                if let Some(id) = reply::oldest_pending(&summary)? {
                    keep = keep.min(id);
                }
            }
            min_id = Some(min_id.map_or(keep, |m| m.min(keep)));
        }
        if let Some(min_id) = min_id.filter(|m| *m > EntryId::ZERO.successor()) {
            out.push((key.clone(), min_id));
        }
    }
    Ok(out)
}
