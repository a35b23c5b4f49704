//! What the tests of the backends over a real server process share: the process
//! guard, a free port, starting a server until it answers, and skipping.

#![allow(clippy::expect_used)]

use std::future::Future;
use std::process::Child;
use std::time::{Duration, Instant};

/// A server process started by a test, killed (and its directory removed) on drop.
pub(crate) struct ServerProcess {
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    pub(crate) fn new(child: Child, dir: Option<tempfile::TempDir>) -> Self {
        ServerProcess { child, _dir: dir }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts a server with `start(port)` on a free port and waits up to `patience` until
/// `ready(port)`; tries another port if the process exits first (it lost the port to
/// someone else). `None` if it cannot be started or never becomes ready.
pub(crate) async fn start_on_free_port<Ready>(
    mut start: impl FnMut(u16) -> Option<ServerProcess>,
    ready: impl Fn(u16) -> Ready,
    patience: Duration,
) -> Option<(ServerProcess, u16)>
where
    Ready: Future<Output = bool>,
{
    for _ in 0..3 {
        let port = free_port();
        let mut server = start(port)?;
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if ready(port).await {
                return Some((server, port));
            }
            if matches!(server.child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    None
}

/// Fails under `CI=true`, else reports the skip; `hint` says how to provide `what`.
pub(crate) fn skip(what: &str, hint: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no {what} to test against: {hint}"
    );
    eprintln!("SKIPPED: no {what} to test against ({hint})");
}
