//! Certificates made for one test run: a CA, a server certificate for `localhost` and
//! `127.0.0.1` signed by it, and client certificates on demand. The PEM files live in a
//! temporary directory; nothing here is committed.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::TlsConnector;

pub struct Pki {
    _dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A certificate chain and its key, for a TLS client.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn ca(common_name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, common_name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    common_name: &str,
) -> (rcgen::Certificate, KeyPair) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    params.distinguished_name.push(DnType::CommonName, common_name);
    let key = KeyPair::generate().expect("key");
    (params.signed_by(&key, ca).expect("sign"), key)
}

fn private_key(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ca("nsq-rs test CA");
        let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1"], "nsqd");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let ca_file = write("ca.pem", ca.pem());
        let cert_file = write("server.pem", cert.pem());
        let key_file = write("server.key", key.serialize_pem());
        Self { _dir: dir, ca, ca_file, cert_file, key_file }
    }

    /// The flags that turn TLS on, with the HTTPS listener on a free loopback port.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.cert_file.display()),
            format!("--tls-key={}", self.key_file.display()),
            "--https-address=127.0.0.1:0".to_owned(),
        ]
    }

    /// A client certificate with this common name, signed by the test CA.
    pub fn client(&self, common_name: &str) -> Identity {
        let (cert, key) = leaf(&self.ca, &[], common_name);
        Identity { chain: vec![cert.der().clone()], key: private_key(&key) }
    }

    /// A client certificate signed by a CA the server does not know.
    pub fn stranger(&self, common_name: &str) -> Identity {
        let other = ca("someone else's CA");
        let (cert, key) = leaf(&other, &[], common_name);
        Identity { chain: vec![cert.der().clone()], key: private_key(&key) }
    }

    /// A connector that trusts the test CA and presents `identity`, if given.
    pub fn connector(&self, identity: Option<Identity>) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match identity {
            Some(identity) => {
                builder.with_client_auth_cert(identity.chain, identity.key).expect("client cert")
            }
            None => builder.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("name")
}
