//! TLS of both servers (rustls with the ring provider): the certificate chain and key
//! from `tls.cert` / `tls.key`, and with `tls.client_ca` mutual TLS — every client must
//! present a certificate that CA signed. Files are read once, when the servers start;
//! a missing or unreadable file stops the start with its path and the cause.

use std::path::Path;
use std::sync::Arc;

use datanexus_config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Invalid(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })
}

fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid(format!("bad PEM certificate in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Invalid(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// The PEM contents of the certificate chain, the key and the client CA (if any).
pub(crate) struct TlsFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsFiles {
    /// Reads the files of `config`, or `None` when TLS is off.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming a file that cannot be read.
    pub(crate) fn load(config: &TlsConfig) -> Result<Option<TlsFiles>> {
        if !config.enabled() {
            return Ok(None);
        }
        let client_ca = if config.client_ca.as_os_str().is_empty() {
            None
        } else {
            Some(read(&config.client_ca, "client CA")?)
        };
        Ok(Some(TlsFiles {
            cert: read(&config.cert, "certificate")?,
            key: read(&config.key, "key")?,
            client_ca,
        }))
    }

    /// The rustls configuration of the HTTP server (HTTP/2 and HTTP/1.1 by ALPN).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad certificate, key or CA.
    pub(crate) fn rustls(&self, config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = certificates(&self.cert, &config.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| Error::Invalid(format!("bad PEM key in {}: {e}", config.key.display())))?;
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Invalid(format!("TLS: {e}")))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(pem, &config.client_ca)? {
                    roots.add(cert).map_err(|e| {
                        Error::Invalid(format!(
                            "bad CA certificate in {}: {e}",
                            config.client_ca.display()
                        ))
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| Error::Invalid(format!("TLS client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder.with_single_cert(certs, key).map_err(|e| {
            Error::Invalid(format!(
                "TLS certificate {} and key {} do not work together: {e}",
                config.cert.display(),
                config.key.display()
            ))
        })?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(server))
    }

    /// The tonic configuration of the gRPC server.
    pub(crate) fn tonic(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.cert, &self.key);
        let tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        match &self.client_ca {
            Some(ca) => tls.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => tls,
        }
    }
}
