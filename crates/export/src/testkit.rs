//! A real InfluxDB 1.x for tests (`influxd` from Debian's `influxdb`), started on free
//! loopback ports with authentication on and an admin user. Public with the feature
//! `testkit` (for other crates' tests).

#![allow(
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::missing_errors_doc
)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ConnectionSpec, DbType};

/// The admin user of [`InfluxServer`].
pub const ADMIN: &str = "dn-admin";
/// Its password.
pub const PASSWORD: &str = "dn-influx-secret";

/// An `influxd` of the test's own, stopped on drop.
pub struct InfluxServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its HTTP address (`127.0.0.1:port`).
    pub addr: String,
}

impl Drop for InfluxServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl InfluxServer {
    /// Starts influxd with authentication and an admin user; `None` (a reported skip,
    /// a failure under CI=true) when it is not installed.
    pub fn start() -> Option<Self> {
        if Command::new("influxd").arg("version").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no influxd to test against (CI=true): .ci/run installs influxdb"
            );
            eprintln!("SKIPPED: no influxd (apt-get install influxdb)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (http, rpc) = (free_port(), free_port());
        let addr = format!("127.0.0.1:{http}");
        let d = dir.path().display();
        let config = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  enabled = true\n  bind-address = \"{addr}\"\n  auth-enabled = true\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n"
        );
        let config_path = dir.path().join("influxdb.conf");
        std::fs::write(&config_path, config).expect("config");
        let child = Command::new("influxd")
            .arg("-config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("influxd");
        let server = InfluxServer {
            child,
            _dir: dir,
            addr,
        };
        // The first user may be created without credentials.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created = server.admin_query(&format!(
                "CREATE USER \"{ADMIN}\" WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
            ));
            if created.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "influxd did not start: {created:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// Runs `q` with curl-free std networking: a plain HTTP/1.0 POST.
    pub fn admin_query(&self, q: &str) -> Result<String, String> {
        use std::io::{Read, Write};
        let body = format!("q={}", crate::influx::percent_encode(q));
        let mut s = std::net::TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        write!(
            s,
            "POST /query?u={ADMIN}&p={PASSWORD} HTTP/1.0\r\nHost: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
            Ok(answer)
        } else {
            Err(answer)
        }
    }

    /// Writes line protocol to `db` with the admin's credentials.
    pub fn write(&self, db: &str, lines: &str) -> Result<(), String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        write!(
            s,
            "POST /write?db={db}&u={ADMIN}&p={PASSWORD} HTTP/1.0\r\nHost: {}\r\n\
             Content-Length: {}\r\n\r\n{lines}",
            self.addr,
            lines.len()
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        if answer.starts_with("HTTP/1.0 204") || answer.starts_with("HTTP/1.1 204") {
            Ok(())
        } else {
            Err(answer)
        }
    }

    pub fn spec(&self) -> ConnectionSpec {
        ConnectionSpec {
            username: Some(ADMIN.to_owned()),
            password: Some(PASSWORD.to_owned()),
            ..ConnectionSpec::new("influx", DbType::Influx, format!("http://{}", self.addr))
        }
    }
}
