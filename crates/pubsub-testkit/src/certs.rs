//! A throw-away public key infrastructure for TLS tests.
//!
//! [`TestPki::generate`] makes, with [`rcgen`]:
//!
//! * a certificate authority ("pubsub-test CA"),
//! * a server certificate for `localhost`, `127.0.0.1` and `::1` signed by
//!   that CA (usable for both server and client authentication, so a broker
//!   cluster can use it for its routes too),
//! * a client certificate (common name `pubsub-test-client`, client-auth
//!   extended key usage) signed by that CA,
//! * a second, unrelated CA (the "wrong CA") with a client certificate of its
//!   own, for negative tests,
//!
//! and writes them all as PEM files into a temporary directory that lives as
//! long as the [`TestPki`] value. Keys are ECDSA P-256 in PKCS#8 PEM
//! (`-----BEGIN PRIVATE KEY-----`), which OpenSSL (Redis, Mosquitto), Go
//! (nats-server) and rustls all read.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Common name of the client certificate signed by the test CA.
pub const CLIENT_COMMON_NAME: &str = "pubsub-test-client";

/// Common name of the test CA that signs the server and client certificates.
pub const CA_COMMON_NAME: &str = "pubsub-test CA";

/// Common name of the unrelated "wrong" CA.
pub const OTHER_CA_COMMON_NAME: &str = "pubsub-test wrong CA";

/// Host names and addresses the server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A complete set of test certificates and keys, written as PEM files into a
/// temporary directory owned by this value (deleted on drop).
///
/// All `*_pem` fields hold the same text as the file at the matching path.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    /// Path of the CA certificate (`ca.pem`) that signed the server and client certificates.
    pub ca_cert: PathBuf,
    /// Path of the server certificate (`server.pem`) for `localhost`, `127.0.0.1` and `::1`.
    pub server_cert: PathBuf,
    /// Path of the server's private key (`server-key.pem`, PKCS#8).
    pub server_key: PathBuf,
    /// Path of the client certificate (`client.pem`, CN `pubsub-test-client`).
    pub client_cert: PathBuf,
    /// Path of the client's private key (`client-key.pem`, PKCS#8).
    pub client_key: PathBuf,
    /// Path of an unrelated CA certificate (`other-ca.pem`) that signed neither
    /// the server nor the client certificate.
    pub other_ca_cert: PathBuf,
    /// Path of a client certificate (`other-client.pem`) signed by the unrelated CA:
    /// a server trusting only [`TestPki::ca_cert`] must reject it.
    pub other_client_cert: PathBuf,
    /// Path of the private key (`other-client-key.pem`) of [`TestPki::other_client_cert`].
    pub other_client_key: PathBuf,
    /// PEM text of [`TestPki::ca_cert`].
    pub ca_cert_pem: String,
    /// PEM text of [`TestPki::server_cert`].
    pub server_cert_pem: String,
    /// PEM text of [`TestPki::server_key`].
    pub server_key_pem: String,
    /// PEM text of [`TestPki::client_cert`].
    pub client_cert_pem: String,
    /// PEM text of [`TestPki::client_key`].
    pub client_key_pem: String,
    /// PEM text of [`TestPki::other_ca_cert`].
    pub other_ca_cert_pem: String,
    /// PEM text of [`TestPki::other_client_cert`].
    pub other_client_cert_pem: String,
    /// PEM text of [`TestPki::other_client_key`].
    pub other_client_key_pem: String,
}

/// A CA certificate in PEM and the issuer that signs with its key.
struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, both in PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

/// Fixed validity window (2020-01-01 .. 2049-12-31): wide enough for any test
/// run, and entirely in the `UTCTime` range so every TLS stack parses it.
fn set_validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2049, 12, 31);
}

fn new_ca(common_name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .expect("rcgen: CA parameters without subject alternative names");
    set_validity(&mut params);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "pubsub testkit");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("rcgen: generate CA key pair");
    let cert = params
        .self_signed(&key)
        .expect("rcgen: self-sign CA certificate");
    Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn new_leaf(
    ca: &Ca,
    common_name: &str,
    subject_alt_names: &[&str],
    ekus: Vec<ExtendedKeyUsagePurpose>,
) -> Leaf {
    let sans: Vec<String> = subject_alt_names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("rcgen: valid subject alternative names");
    set_validity(&mut params);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "pubsub testkit");
    params.is_ca = IsCa::ExplicitNoCa;
    // ECDSA keys sign; they never encipher, so `keyEncipherment` is left out.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("rcgen: generate leaf key pair");
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("rcgen: sign leaf certificate with the test CA");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl TestPki {
    /// Generates a fresh CA, server certificate, client certificate and
    /// unrelated CA, and writes them as PEM files into a new temporary
    /// directory.
    ///
    /// # Panics
    ///
    /// If key generation, signing, or writing the files fails.
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("pubsub-testkit-pki-")
            .tempdir()
            .expect("create a temporary directory for the test PKI");

        let ca = new_ca(CA_COMMON_NAME);
        let server = new_leaf(
            &ca,
            "localhost",
            &SERVER_NAMES,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let client = new_leaf(
            &ca,
            CLIENT_COMMON_NAME,
            &[],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let other_ca = new_ca(OTHER_CA_COMMON_NAME);
        let other_client = new_leaf(
            &other_ca,
            CLIENT_COMMON_NAME,
            &[],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );

        let write = |name: &str, text: &str| -> PathBuf {
            let path = dir.path().join(name);
            fs::write(&path, text)
                .unwrap_or_else(|e| panic!("write test PKI file {}: {e}", path.display()));
            path
        };

        TestPki {
            ca_cert: write("ca.pem", &ca.cert_pem),
            server_cert: write("server.pem", &server.cert_pem),
            server_key: write("server-key.pem", &server.key_pem),
            client_cert: write("client.pem", &client.cert_pem),
            client_key: write("client-key.pem", &client.key_pem),
            other_ca_cert: write("other-ca.pem", &other_ca.cert_pem),
            other_client_cert: write("other-client.pem", &other_client.cert_pem),
            other_client_key: write("other-client-key.pem", &other_client.key_pem),
            ca_cert_pem: ca.cert_pem,
            server_cert_pem: server.cert_pem,
            server_key_pem: server.key_pem,
            client_cert_pem: client.cert_pem,
            client_key_pem: client.key_pem,
            other_ca_cert_pem: other_ca.cert_pem,
            other_client_cert_pem: other_client.cert_pem,
            other_client_key_pem: other_client.key_pem,
            dir,
        }
    }

    /// The temporary directory holding all PEM files (deleted when `self` drops).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to a file called `name` inside [`TestPki::dir`] and
    /// returns its path; for tests that need odd files (not PEM, truncated,
    /// empty, ...). An existing file of that name is replaced.
    ///
    /// # Panics
    ///
    /// If `name` is not a plain file name (contains a path separator or is
    /// `..`), or the file cannot be written.
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        assert!(
            !name.is_empty()
                && name != "."
                && name != ".."
                && !name.contains('/')
                && !name.contains('\\'),
            "TestPki::write_file: {name:?} must be a plain file name"
        );
        let path = self.dir.path().join(name);
        fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("write test file {}: {e}", path.display()));
        path
    }
}
