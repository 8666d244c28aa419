//! TLS, with rustls and its `ring` provider:
//!
//! - the server configuration from `--tls-cert`, `--tls-key`, `--tls-client-auth-policy`,
//!   `--tls-root-ca-file` and `--tls-min-version`, shared by the IDENTIFY upgrade and the HTTPS
//!   listener;
//! - the client configuration nsqd uses to reach `https://` auth servers (`--tls-root-ca-file`
//!   as its roots, or the system's);
//! - what `/stats` and the auth server are told of a session ([`Session`]);
//! - the HTTPS listener, which runs each handshake in its own task so one slow client does not
//!   hold up the others.
//!
//! rustls implements TLS 1.2 and 1.3 only: `--tls-min-version` `tls1.0` and `tls1.1` (nsqd's
//! default is `tls1.0`) therefore mean TLS 1.2.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::options::{Options, TlsMinVersion};

/// How long a client has to complete a TLS handshake (nsqd's deadline for the upgrade).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(min: TlsMinVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        TlsMinVersion::Tls13 => TLS13_ONLY,
        _ => rustls::ALL_VERSIONS,
    }
}

/// A path flag; empty means not given, as in nsqd.
fn path(flag: &str) -> Option<&Path> {
    (!flag.is_empty()).then(|| Path::new(flag))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

/// The roots in `--tls-root-ca-file`, or the system's when it is not given.
fn roots(ca_file: Option<&Path>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).with_context(|| {
                    format!("failed to append certificate to pool ({})", path.display())
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    Ok(roots)
}

/// The server configuration, or `None` when neither `--tls-cert` nor `--tls-key` is given.
pub(crate) fn server_config(
    options: &Options,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (cert, key) = match (path(&options.tls_cert), path(&options.tls_key)) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => bail!("failed to build TLS config - --tls-cert and --tls-key must be given together"),
    };
    let build = || -> anyhow::Result<rustls::ServerConfig> {
        let certs = read_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading the private key from {}", key.display()))?;
        let provider = provider();
        let verifier: Arc<dyn ClientCertVerifier> = match options.tls_client_auth_policy.as_str() {
            "require" => {
                Arc::new(AnyClientCert { algorithms: provider.signature_verification_algorithms })
            }
            "require-verify" => {
                let roots = roots(path(&options.tls_root_ca_file))?;
                if roots.is_empty() {
                    bail!("no system root certificates found; give --tls-root-ca-file");
                }
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()?
            }
            _ => WebPkiClientVerifier::no_client_auth(),
        };
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions(options.tls_min_version))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        Ok(config)
    };
    let config = build().context("failed to build TLS config")?;
    Ok(Some(Arc::new(config)))
}

/// The HTTP client nsqd uses for auth servers and nsqlookupd's API: the `--http-client-*`
/// timeouts, and for `https://` the roots of `--tls-root-ca-file`, or the system's (none
/// found: HTTPS requests fail, plain HTTP works).
pub(crate) fn http_client(options: &Options) -> anyhow::Result<reqwest::Client> {
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(options)?)
        .connect_timeout(options.http_client_connect_timeout)
        .timeout(options.http_client_request_timeout)
        .build()?;
    Ok(client)
}

fn client_config(options: &Options) -> anyhow::Result<rustls::ClientConfig> {
    let roots =
        roots(path(&options.tls_root_ca_file)).context("failed to build client TLS config")?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(options.tls_min_version))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// `--tls-client-auth-policy=require`: a certificate must be presented, and the client must
/// prove it holds its key, but the certificate is not checked against any root (Go's
/// `RequireAnyClientCert`).
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What is known of an upgraded connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Session {
    /// `TLS1.2` or `TLS1.3`, as nsqd names them.
    pub(crate) version: String,
    /// The IANA name of the cipher suite.
    pub(crate) cipher_suite: String,
    /// The subject common name of the client's certificate, if it sent one.
    pub(crate) common_name: String,
}

impl Session {
    pub(crate) fn of(connection: &ServerConnection) -> Self {
        let version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3".to_owned(),
            Some(other) => format!("Unknown {}", u16::from(other)),
            None => String::new(),
        };
        let cipher_suite = connection
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .map(|name| name.replacen("TLS13_", "TLS_", 1))
            .unwrap_or_default();
        let common_name = connection
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| common_name(leaf))
            .unwrap_or_default();
        Self { version, cipher_suite, common_name }
    }
}

fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(name)
}

/// The HTTPS listener: accepts TCP connections and hands out those whose handshake completed.
#[derive(Debug)]
pub(crate) struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    /// Starts accepting on `listener` until `shutdown`.
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (send, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, remote) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = crate::serving::accept(&listener, "HTTPS") => accepted,
                };
                let (acceptor, send) = (acceptor.clone(), send.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = send.send((tls, remote)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::info!("HTTPS: TLS handshake with {remote} failed: {error}");
                        }
                        Err(_) => tracing::info!("HTTPS: TLS handshake with {remote} timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
