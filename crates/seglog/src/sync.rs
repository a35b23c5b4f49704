//! The background fsync thread.
//!
//! Under [`FsyncPolicy::Always`] appends write their batch, queue their partition here and
//! wait; the thread takes *every* queued partition at once, fsyncs each, and publishes the
//! new durable offsets, waking the waiters. Appends arriving while an fsync runs queue up
//! for the next round, so one fsync serves every append that arrived during the previous
//! one (group commit). Under [`FsyncPolicy::Interval`] the thread does the same on a timer.
//! It is a `std::thread`, never blocking the async runtime.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::partition::Partition;
use crate::{Error, FsyncPolicy, Result};

#[derive(Default)]
struct Queue {
    pending: Vec<Arc<Partition>>,
    shutdown: bool,
}

/// State shared between appenders and the sync thread.
#[derive(Default)]
pub(crate) struct SyncShared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl SyncShared {
    /// Queues a partition with unsynced writes.
    pub(crate) fn enqueue(&self, partition: Arc<Partition>) {
        self.queue.lock().pending.push(partition);
        self.wake.notify_one();
    }
}

/// Handle on the running sync thread.
pub(crate) struct SyncThread {
    shared: Arc<SyncShared>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl SyncThread {
    /// Starts the thread for `policy` (no thread for `Never`); under `Interval` it
    /// fsyncs every `interval`.
    pub(crate) fn start(
        shared: Arc<SyncShared>,
        policy: FsyncPolicy,
        interval: Duration,
    ) -> Result<Self> {
        let handle = if policy == FsyncPolicy::Never {
            None
        } else {
            let worker = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name("seglog-sync".into())
                .spawn(move || run(&worker, policy, interval))
                .map_err(|e| Error::io("spawn sync thread for", "", e))?;
            Some(handle)
        };
        Ok(Self {
            shared,
            handle: Mutex::new(handle),
        })
    }

    /// Asks the thread to finish the queued work and stop, and waits for it.
    pub(crate) fn stop(&self) {
        self.shared.queue.lock().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.handle.lock().take()
            && handle.join().is_err()
        {
            tracing::error!("seglog sync thread panicked");
        }
    }
}

fn run(shared: &SyncShared, policy: FsyncPolicy, every: Duration) {
    loop {
        let batch = {
            let mut queue = shared.queue.lock();
            if policy == FsyncPolicy::Interval {
                let deadline = Instant::now() + every;
                while !queue.shutdown && Instant::now() < deadline {
                    shared.wake.wait_until(&mut queue, deadline);
                }
            } else {
                while queue.pending.is_empty() && !queue.shutdown {
                    shared.wake.wait(&mut queue);
                }
            }
            if queue.shutdown && queue.pending.is_empty() {
                return;
            }
            std::mem::take(&mut queue.pending)
        };
        for partition in batch {
            // Errors are logged and published to waiters by `sync_now` itself.
            let _ = partition.sync_now();
        }
    }
}
