//! Connecting: the URL, TLS (rustls with ring) and the connection pool.
//!
//! `sslmode` follows libpq: `disable`; `prefer` (the default: TLS when the server offers
//! it) and `require` encrypt without checking the certificate; `verify-full` checks the
//! chain against `sslrootcert` (a PEM file) and the host name. `sslrootcert` is only
//! read with `verify-full`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use datanexus_store::{Error, Result};

/// `work_mem` of the store's sessions unless the URL sets `options`.
pub(crate) const WORK_MEM: &str = "64MB";

/// How the store reaches PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/db?sslmode=…` (libpq URL or key=value form).
    pub url: String,
    /// Most connections the store holds open.
    pub pool_size: usize,
    /// How long to wait for a connection (and for a pooled one to be free).
    pub connect_timeout: Duration,
    /// Samples and events older than this are dropped by retention; `None` keeps all.
    pub retention_max_age: Option<Duration>,
    /// Daily sample partitions created ahead of today.
    pub partitions_ahead_days: u32,
}

impl PostgresOptions {
    /// Options for `url` with the defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            retention_max_age: None,
            partitions_ahead_days: 2,
        }
    }
}

/// A parsed URL: the client config, the TLS connector, and a name for messages
/// (`host:port/db`, never the password).
pub(crate) struct Target {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
    pub(crate) display: String,
}

/// Parses `url`, taking out the TLS parameters tokio-postgres does not know.
///
/// # Errors
/// [`Error::Invalid`] naming what is wrong (never echoing the password).
pub(crate) fn target(url: &str, connect_timeout: Duration) -> Result<Target> {
    let (url, mode, root) = split_tls_params(url)?;
    let mut config = tokio_postgres::Config::from_str(&url)
        .map_err(|e| Error::Invalid(format!("invalid postgres url: {e}")))?;
    config.connect_timeout(connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("datanexus");
    }
    if config.get_options().is_none() {
        // Exact quantiles sort every selected value: keep a million of them in memory
        // instead of spilling the sort to disk (PostgreSQL's default is 4 MB).
        config.options(format!("-c work_mem={WORK_MEM}"));
    }
    let verify = match mode.as_deref() {
        None | Some("prefer") => {
            config.ssl_mode(SslMode::Prefer);
            false
        }
        Some("disable") => {
            config.ssl_mode(SslMode::Disable);
            false
        }
        Some("require") => {
            config.ssl_mode(SslMode::Require);
            false
        }
        Some("verify-full") => {
            config.ssl_mode(SslMode::Require);
            true
        }
        Some(other) => {
            return Err(Error::Invalid(format!(
                "unsupported sslmode {other:?}: use disable, prefer, require or verify-full"
            )));
        }
    };
    let tls = if verify {
        let root = root.ok_or_else(|| {
            Error::Invalid("sslmode=verify-full needs sslrootcert=<PEM file>".into())
        })?;
        verifying_tls(&root)?
    } else {
        encrypting_tls()
    };
    let display = describe(&config);
    Ok(Target {
        config,
        tls,
        display,
    })
}

/// `host:port/db` of `config`, for messages.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Removes `sslmode` and `sslrootcert` from the query string (URL form) or the
/// key=value list, returning them separately.
fn split_tls_params(url: &str) -> Result<(String, Option<String>, Option<String>)> {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_owned());
            true
        }
        "sslrootcert" => {
            root = Some(value.to_owned());
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        !take(k, v)
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        url.split_whitespace()
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                !take(k, v)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok((rest, mode, root))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS that encrypts without checking the server's certificate (libpq's `require`).
fn encrypting_tls() -> MakeRustlsConnect {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        });
    // The ring provider supports the default protocol versions; should that ever fail,
    // fall back to a config that verifies (safe, merely stricter).
    MakeRustlsConnect::new(config.unwrap_or_else(|_| {
        ClientConfig::builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    }))
}

/// TLS that checks the chain against the CA certificates in `root_pem` and the host name.
fn verifying_tls(root_pem: &str) -> Result<MakeRustlsConnect> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(root_pem)
        .map_err(|e| Error::Invalid(format!("cannot read sslrootcert {root_pem:?}: {e}")))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| Error::Invalid(format!("bad certificate in {root_pem:?}: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Invalid(format!("bad certificate in {root_pem:?}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Invalid(format!(
            "no certificate in sslrootcert {root_pem:?}"
        )));
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts any certificate but still checks the handshake signatures (so the session
/// is encrypted with the key of whoever presented the certificate).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A pool of at most `size` connections to `target`.
///
/// # Errors
/// [`Error::Invalid`] for a pool size of 0.
pub(crate) fn pool(target: &Target, size: usize, timeout: Duration) -> Result<Pool> {
    let manager = Manager::from_config(
        target.config.clone(),
        target.tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| Error::Invalid(format!("postgres pool: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls() {
        let (rest, mode, root) =
            split_tls_params("postgres://u:p@h:5/db?sslmode=verify-full&sslrootcert=/ca.pem")
                .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (rest, mode, _) =
            split_tls_params("postgresql://h/db?application_name=x&sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://h/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("require"));
        let (rest, mode, _) = split_tls_params("host=h sslmode=disable dbname=d").unwrap();
        assert_eq!(rest, "host=h dbname=d");
        assert_eq!(mode.as_deref(), Some("disable"));
    }

    #[test]
    fn targets_are_described_without_the_password() {
        let t = target(
            "postgres://me:secret@db.example:6543/metrics",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(t.display, "db.example:6543/metrics");
        assert!(!t.display.contains("secret"));
    }

    #[test]
    fn bad_urls_and_modes_are_refused() {
        let e = |u: &str| match target(u, Duration::from_secs(1)) {
            Err(Error::Invalid(m)) => m,
            Err(other) => panic!("unexpected {other}"),
            Ok(_) => panic!("{u} accepted"),
        };
        assert!(e("postgres://h/db?sslmode=verify-ca").contains("verify-ca"));
        assert!(e("postgres://h/db?sslmode=verify-full").contains("sslrootcert"));
        assert!(e("postgres://h/db?bogus=1").contains("invalid postgres url"));
        assert!(
            e("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem")
                .contains("/nonexistent.pem")
        );
    }
}
