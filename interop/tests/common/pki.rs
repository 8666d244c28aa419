//! Certificates made for one test run: a CA, and a server certificate for `localhost` and
//! `127.0.0.1` signed by it. The PEM files live in a temporary directory; no key is committed.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

pub struct Pki {
    /// The CA certificate, DER, for clients that take it in memory.
    pub ca_der: Vec<u8>,
    /// The CA certificate, PEM, for clients that read it from a file.
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    // Dropped last: the files above live here.
    _dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "nsq-interop test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = CertificateParams::new(names).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "nsqd");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");

        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Self {
            ca_der: ca.der().to_vec(),
            ca_file: write("ca.pem", ca.pem()),
            cert_file: write("server.pem", cert.pem()),
            key_file: write("server.key", key.serialize_pem()),
            _dir: dir,
        }
    }

    /// The flags that turn TLS on, with the HTTPS listener on a free loopback port.
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.cert_file.display()),
            format!("--tls-key={}", self.key_file.display()),
            "--https-address=127.0.0.1:0".to_owned(),
        ]
    }
}
