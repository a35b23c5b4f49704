//! Options of the Redis Streams backend and of its connections.

use std::fmt;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;

/// Options of the Redis Streams backend.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host[:port][/db]` or `rediss://…` for TLS.
    pub url: String,
    /// Prefix of every key this backend writes.
    pub stream_prefix: String,
    /// Approximate `MAXLEN` of each partition's stream, in entries.
    pub maxlen: u64,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one command or pipeline once connected.
    pub command_timeout: Duration,
    /// With `rediss://`: PEM CA certificates to verify the server with, instead of the
    /// system's trust store (a private CA).
    pub tls_ca: Option<std::path::PathBuf>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            stream_prefix: "datanexus".to_owned(),
            maxlen: 0,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            tls_ca: None,
        }
    }
}

/// A Redis client for `url`, trusting the CA certificates in `tls_ca` (PEM) instead of
/// the system's trust store when given (`rediss://` only).
///
/// # Errors
/// A bad URL, or a CA file that cannot be read (as the message).
pub fn redis_client(url: &str, tls_ca: Option<&std::path::Path>) -> Result<redis::Client, String> {
    // rustls needs a process-wide crypto provider for `rediss://`; ours is `ring`.
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match tls_ca {
        None => redis::Client::open(url).map_err(|e| e.to_string()),
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read the Redis TLS CA {}: {e}", path.display()))?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(url, certs).map_err(|e| e.to_string())
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("stream_prefix", &self.stream_prefix)
            .field("maxlen", &self.maxlen)
            .field("tls_ca", &self.tls_ca)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// `url` with the password (if any) replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Connection settings: bounded connects, few quick retries (callers retry on
/// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)).
pub(super) fn connection_config(
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}
