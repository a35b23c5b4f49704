//! What the tests of the backends over a real server process share: the process
//! guard, a free port, starting a server until it answers, skipping, and a Kafka
//! broker to test against. Public with the feature `testkit` (for other crates' tests).

#![allow(clippy::expect_used)]

use std::future::Future;
use std::process::Child;
use std::time::{Duration, Instant};

/// A server process started by a test, killed (and its directory removed) on drop.
pub struct ServerProcess {
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    pub fn new(child: Child, dir: Option<tempfile::TempDir>) -> Self {
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
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts a server with `start(port)` on a free port and waits up to `patience` until
/// `ready(port)`; tries another port if the process exits first (it lost the port to
/// someone else). `None` if it cannot be started or never becomes ready.
pub async fn start_on_free_port<Ready>(
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
pub fn skip(what: &str, hint: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no {what} to test against: {hint}"
    );
    eprintln!("SKIPPED: no {what} to test against ({hint})");
}

/// Where the Kafka tests find their broker.
#[cfg(feature = "kafka")]
pub const KAFKA_HINT: &str = "set TEST_KAFKA_BROKERS or TANSU_BIN";

/// Whether `host:port` accepts TCP connections within a second.
pub async fn accepts_connections(address: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The tansu binary: `TANSU_BIN`, else `~/.cache/datanexus-tools/tansu` (where
/// `.ci/run` installs it).
#[cfg(feature = "kafka")]
fn tansu_binary() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let path = match std::env::var_os("TANSU_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/datanexus-tools/tansu"),
    };
    path.is_file().then_some(path)
}

/// Starts tansu (an Apache-2.0 Kafka-compatible broker, in-memory storage; an external
/// binary) on a free loopback port; `None` if there is no binary or it never listens.
#[cfg(feature = "kafka")]
async fn spawn_tansu() -> Option<(ServerProcess, String)> {
    tansu_advertising(|port| format!("tcp://127.0.0.1:{port}")).await
}

/// Starts tansu on a free loopback port, telling its clients to connect to
/// `advertised` instead (e.g. a TLS terminator in front of it); returns the process and
/// the `host:port` it listens on. `None` if there is no binary or it never listens.
#[cfg(feature = "kafka")]
pub async fn tansu_behind(advertised: &str) -> Option<(ServerProcess, String)> {
    let advertised = advertised.to_owned();
    tansu_advertising(move |_| advertised.clone()).await
}

#[cfg(feature = "kafka")]
async fn tansu_advertising(advertised: impl Fn(u16) -> String) -> Option<(ServerProcess, String)> {
    use std::process::{Command, Stdio};
    let binary = tansu_binary()?;
    let start = |port: u16| {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .arg("broker")
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised(port),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(ServerProcess::new(child, None))
    };
    let ready = |port: u16| async move { accepts_connections(&format!("127.0.0.1:{port}")).await };
    let (server, port) = start_on_free_port(start, ready, Duration::from_secs(10)).await?;
    Some((server, format!("127.0.0.1:{port}")))
}

/// A Kafka-protocol broker to test against: the one at `TEST_KAFKA_BROKERS` (`.ci/run`
/// starts a tansu), else a private tansu kept alive by the returned process; `None` to
/// skip (never under `CI=true`, where it fails).
#[cfg(feature = "kafka")]
pub async fn kafka_server() -> Option<(Option<ServerProcess>, String)> {
    if let Ok(bootstrap) = std::env::var("TEST_KAFKA_BROKERS") {
        assert!(
            accepts_connections(&bootstrap).await,
            "TEST_KAFKA_BROKERS={bootstrap} does not accept connections"
        );
        return Some((None, bootstrap));
    }
    if let Some((server, bootstrap)) = spawn_tansu().await {
        return Some((Some(server), bootstrap));
    }
    skip("kafka broker", KAFKA_HINT);
    None
}
