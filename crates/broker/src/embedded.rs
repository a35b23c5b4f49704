//! The embedded backend: topics in the embedded durable log (`datanexus-seglog`) under
//! the data directory. Nothing else has to be installed.
//!
//! A produced batch is split by partition; each partition's share is one seglog append,
//! and all of them run concurrently so that they share the log's group-commit fsyncs.
//! Redelivery of a dead consumer's work is the log's lease expiry.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use datanexus_seglog::{self as seglog, Log, LogOptions, Record};
use futures::future::try_join_all;

use crate::{
    Broker, Consumer, ConsumerOptions, Delivery, Error, PartitionLag, Position, ProduceRecord,
    RecordId, Result,
};

/// Options of the embedded backend.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Options of the underlying log (fsync policy, segment size, retention).
    pub log: LogOptions,
}

/// The embedded broker.
#[derive(Clone)]
pub struct EmbeddedBroker {
    log: Log,
    placement: std::sync::Arc<crate::Placement>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker").finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// Opens (recovering) the log in `dir`.
    ///
    /// # Errors
    /// If the directory cannot be opened or is locked by another process.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        Ok(EmbeddedBroker {
            log: Log::open(dir, options.log)?,
            placement: Default::default(),
        })
    }

    /// The underlying log (for tools that read it back).
    pub fn log(&self) -> &Log {
        &self.log
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        Ok(self.log.create_topic(topic, partitions)?)
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.log.partitions(topic)?)
    }

    async fn produce(&self, topic: &str, records: Vec<ProduceRecord>) -> Result<Vec<RecordId>> {
        if records.is_empty() {
            return Err(Error::Invalid("empty batch".into()));
        }
        let partitions = self.log.partitions(topic)?;
        let mut by_partition: Vec<(Vec<Record>, Vec<usize>)> =
            (0..partitions).map(|_| Default::default()).collect();
        for (i, r) in records.into_iter().enumerate() {
            let p = self.placement.pick(&r, partitions)? as usize;
            let slot = &mut by_partition[p];
            slot.0.push(Record {
                key: r.key,
                value: r.value,
                timestamp_ms: r.timestamp_ms,
            });
            slot.1.push(i);
        }
        let appends = by_partition
            .iter()
            .enumerate()
            .filter(|(_, (recs, _))| !recs.is_empty())
            .map(|(p, (recs, idx))| async move {
                let base = self.log.append(topic, p as u32, recs).await?;
                Ok::<_, Error>((p as u32, base, idx))
            });
        let results = try_join_all(appends).await?;
        let total = results.iter().map(|(_, _, idx)| idx.len()).sum();
        let mut ids = vec![RecordId::offset(0, 0); total];
        for (p, base, idx) in results {
            for (k, &i) in idx.iter().enumerate() {
                ids[i] = RecordId::offset(p, base + k as u64);
            }
        }
        Ok(ids)
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        options: ConsumerOptions,
    ) -> Result<Box<dyn Consumer>> {
        let opts = seglog::GroupOptions {
            lease_timeout: options.lease_timeout,
            session_timeout: options.session_timeout,
        };
        let inner = self.log.consumer(topic, group, consumer, opts)?;
        Ok(Box::new(EmbeddedConsumer {
            inner,
            id: consumer.to_owned(),
        }))
    }

    async fn ensure_group(&self, topic: &str, group: &str) -> Result<()> {
        Ok(self.log.ensure_group(topic, group)?)
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        let partitions = self.log.partitions(topic)?;
        (0..partitions)
            .map(|p| {
                let end = self.log.end_offset(topic, p)?;
                let committed = self.log.committed(topic, group, p)?;
                Ok(PartitionLag {
                    partition: p,
                    lag: end.saturating_sub(committed),
                })
            })
            .collect()
    }

    async fn ready(&self) -> Result<()> {
        // The log is in-process: it is ready while it is open.
        if self.log.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    async fn enforce_retention(&self) -> Result<()> {
        let log = self.log.clone();
        let report = tokio::task::spawn_blocking(move || log.enforce_retention())
            .await
            .map_err(|e| Error::Internal(format!("retention task failed: {e}")))??;
        if report.segments_deleted > 0 {
            tracing::info!(
                segments = report.segments_deleted,
                bytes = report.bytes_deleted,
                "retention deleted segments"
            );
        }
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|e| Error::Internal(format!("close task failed: {e}")))??;
        Ok(())
    }
}

struct EmbeddedConsumer {
    inner: seglog::Consumer,
    id: String,
}

/// Groups record ids by partition, preserving order; rejects foreign ids.
fn by_partition(ids: &[RecordId]) -> Result<Vec<(u32, Vec<u64>)>> {
    let mut out: Vec<(u32, Vec<u64>)> = Vec::new();
    for id in ids {
        let Position::Offset(o) = id.position else {
            return Err(Error::Invalid(format!(
                "record id {id} is not an embedded-log id"
            )));
        };
        match out.iter_mut().find(|(p, _)| *p == id.partition) {
            Some((_, v)) => v.push(o),
            None => out.push((id.partition, vec![o])),
        }
    }
    Ok(out)
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    fn id(&self) -> &str {
        &self.id
    }

    async fn poll(&self, max_records: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let got = self.inner.poll(max_records, wait).await?;
        Ok(got
            .into_iter()
            .map(|d| Delivery {
                id: RecordId::offset(d.partition, d.offset),
                key: d.key,
                value: d.value,
                timestamp_ms: d.timestamp_ms,
                delivery_count: d.delivery_count,
            })
            .collect())
    }

    async fn ack(&self, ids: &[RecordId]) -> Result<()> {
        for (p, offsets) in by_partition(ids)? {
            self.inner.ack(p, &offsets).await?;
        }
        Ok(())
    }

    async fn nack(&self, ids: &[RecordId]) -> Result<()> {
        for (p, offsets) in by_partition(ids)? {
            self.inner.nack(p, &offsets).await?;
        }
        Ok(())
    }

    async fn heartbeat(&self) -> Result<()> {
        Ok(self.inner.heartbeat()?)
    }

    async fn close(&self) -> Result<()> {
        Ok(self.inner.close()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
    }

    async fn open() -> (Fixture, std::sync::Arc<dyn Broker>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = EmbeddedBroker::open(dir.path(), EmbeddedOptions::default()).expect("open");
        (Fixture { _dir: dir }, std::sync::Arc::new(broker))
    }

    fn options() -> ConsumerOptions {
        ConsumerOptions {
            lease_timeout: Duration::from_secs(2),
            session_timeout: Duration::from_secs(1),
        }
    }

    crate::conformance::conformance_suite!(open, options());

    #[tokio::test]
    async fn produced_ids_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = EmbeddedBroker::open(dir.path(), EmbeddedOptions::default()).expect("open");
        broker.ensure_topic("t", 2).await.expect("topic");
        let recs = (0..10)
            .map(|i| ProduceRecord {
                partition: Some(i % 2),
                key: None,
                value: Bytes::from(vec![i as u8]),
                timestamp_ms: 0,
            })
            .collect();
        let ids = broker.produce("t", recs).await.expect("produce");
        broker.stop().await.expect("stop");
        drop(broker);
        let broker = EmbeddedBroker::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
        for (i, id) in ids.iter().enumerate() {
            let Position::Offset(o) = id.position else {
                panic!("offset id expected")
            };
            let got = broker.log().read("t", id.partition, o, 1).expect("read");
            assert_eq!(got[0].value, Bytes::from(vec![i as u8]));
        }
    }

    use crate::Bytes;
}
