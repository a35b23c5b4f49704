//! TLS on both servers, with a private CA made by the test (rcgen): HTTPS and gRPC over
//! TLS answer a client that trusts the CA; plain-text clients get nothing; with a client
//! CA configured (mutual TLS), a client without a certificate is refused and one with a
//! certificate that CA signed is served.

use std::sync::Arc;

use datanexus_config::TlsConfig;
use datanexus_server::ServerOptions;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::support::{Running, options};

/// A CA, a server certificate for `localhost` and 127.0.0.1, and a client certificate,
/// as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ),
            ("client", vec!["client.example".to_owned()]),
        ] {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(sans)
                .expect("params")
                .signed_by(&key, &ca)
                .expect("sign");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("pem")
    }

    fn options(&self, mutual: bool) -> ServerOptions {
        ServerOptions {
            tls: TlsConfig {
                cert: self.path("server.pem"),
                key: self.path("server.key"),
                client_ca: if mutual {
                    self.path("ca.pem")
                } else {
                    Default::default()
                },
            },
            ..options()
        }
    }

    /// A rustls client trusting the CA, with the client certificate when `identify`.
    fn client(&self, identify: bool) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = if identify {
            let chain: Vec<_> = CertificateDer::pem_file_iter(self.path("client.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(self.path("client.key")).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// `GET /health` over HTTPS; the status, or the error that prevented an answer.
async fn https_health(
    addr: std::net::SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/health")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}

async fn grpc_health(running: &Running, pki: &Pki, identify: bool) -> Result<i32, String> {
    let url = running.grpc_url.replace("http://", "https://");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("localhost");
    if identify {
        tls = tls.identity(Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        ));
    }
    let channel = Endpoint::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.into_inner().status)
}

#[tokio::test]
async fn both_servers_speak_tls_to_clients_that_trust_the_ca() {
    let pki = Pki::new();
    let running = Running::start(pki.options(false)).await;
    assert_eq!(
        https_health(running.http_addr, pki.client(false)).await,
        Ok(200)
    );
    assert_eq!(grpc_health(&running, &pki, false).await, Ok(1), "SERVING");
    // A plain-text client gets no HTTP answer.
    let plain = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    let answered = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(plain)).await?;
        tokio::spawn(connection);
        sender
            .send_request(
                hyper::Request::get("/health")
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
    }
    .await;
    assert!(answered.is_err(), "plain HTTP answered over a TLS port");
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let pki = Pki::new();
    let running = Running::start(pki.options(true)).await;
    assert!(
        https_health(running.http_addr, pki.client(false))
            .await
            .is_err()
    );
    assert_eq!(
        https_health(running.http_addr, pki.client(true)).await,
        Ok(200)
    );
    assert!(grpc_health(&running, &pki, false).await.is_err());
    assert_eq!(grpc_health(&running, &pki, true).await, Ok(1));
    running.shutdown().await.expect("clean shutdown");
}
