//! TLS client settings shared by every backend, built on rustls with the
//! `ring` provider.
//!
//! One provider for the whole process: async-nats, redis and rumqttc all
//! build on rustls, and when two providers are compiled in, rustls cannot
//! pick one and every TLS connect panics. [`install_default_provider`] sets
//! `ring` as the process default before any connect (keeping one that the
//! application installed itself).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, ErrorKind, Result};

/// Install `ring` as the process-wide rustls provider unless one is installed.
pub fn install_default_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing this race to another thread is fine: a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The TLS files and switches of one backend section; `section` (e.g.
/// `"nats"`) prefixes the key names in errors.
#[derive(Clone, Copy, Debug)]
pub struct TlsFiles<'a> {
    /// Config section name, for error messages.
    pub section: &'a str,
    /// Key name of the CA file, for error messages.
    pub ca_key: &'a str,
    /// Key name of the client certificate.
    pub cert_key: &'a str,
    /// Key name of the client key.
    pub key_key: &'a str,
    /// CA certificate(s) to trust instead of the system roots.
    pub ca: Option<&'a Path>,
    /// Client certificate chain for mutual TLS.
    pub cert: Option<&'a Path>,
    /// Client private key for mutual TLS.
    pub key: Option<&'a Path>,
    /// Verify the server certificate.
    pub verify: bool,
}

impl TlsFiles<'_> {
    /// The keys of the files that are set (`nats.tls_ca_cert`, ...).
    pub fn keys_set(&self) -> Vec<String> {
        [
            (self.ca_key, self.ca),
            (self.cert_key, self.cert),
            (self.key_key, self.key),
        ]
        .into_iter()
        .filter(|(_, path)| path.is_some())
        .map(|(key, _)| format!("{}.{key}", self.section))
        .collect()
    }
}

/// With TLS off, TLS files that are set are not used: warn about them, so
/// that a forgotten `tls = true` does not pass unnoticed. `enable` says how
/// to turn TLS on for the backend. The same words on every backend.
pub fn warn_files_without_tls(files: &TlsFiles<'_>, enable: &str) {
    let set = files.keys_set();
    if set.is_empty() {
        return;
    }
    let (verb, them) = if set.len() == 1 {
        ("is", "it is")
    } else {
        ("are", "they are")
    };
    tracing::warn!(
        "{} {verb} set but TLS is off, so {them} not used: {enable}",
        set.join(", ")
    );
}

fn tls_err(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Tls, format!("{key}: {msg}"))
}

/// The contents of the file named by `key`. A file that is missing or
/// cannot be read is a configuration error ([`ErrorKind::InvalidConfig`]):
/// the key names a file that is not there for us. What is wrong inside a
/// file that could be read (not PEM, no certificate, an unusable key) is a
/// TLS error, as it is a problem of the TLS material itself.
fn read(key: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist".to_string()
        } else {
            format!("cannot be read: {e}")
        };
        Error::config(key, format!("file {} {what}", path.display()))
    })
}

/// Certificates from a PEM file; an error names `key` and the path when the
/// file is missing or unreadable ([`ErrorKind::InvalidConfig`]), not PEM,
/// or holds no certificate ([`ErrorKind::Tls`]).
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(key, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            tls_err(
                key,
                format!("{} is not a valid PEM file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(tls_err(
            key,
            format!(
                "{} holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\")",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The private key from a PEM file (PKCS#8, PKCS#1 or SEC1); errors as
/// for [`load_certs`].
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        tls_err(
            key,
            format!("{} holds no usable PEM private key: {e}", path.display()),
        )
    })
}

/// Trust anchors: the CA file if given, else the system's roots.
pub fn root_store(files: &TlsFiles<'_>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match files.ca {
        Some(ca) => {
            let key = format!("{}.{}", files.section, files.ca_key);
            for cert in load_certs(&key, ca)? {
                roots.add(cert).map_err(|e| {
                    tls_err(
                        &key,
                        format!("{} is not a usable CA certificate: {e}", ca.display()),
                    )
                })?;
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            for cert in loaded.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() && files.verify {
        return Err(tls_err(
            &format!("{}.{}", files.section, files.ca_key),
            "TLS is on but no CA certificate is available: the system has no trusted roots; set this key to the CA file that signed the server certificate",
        ));
    }
    Ok(roots)
}

/// A rustls client config from `files`, with every file checked: it exists,
/// is PEM, and the client key matches the client certificate.
pub fn client_config(files: &TlsFiles<'_>) -> Result<ClientConfig> {
    install_default_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(files.section, e))?;
    let builder = if files.verify {
        builder.with_root_certificates(root_store(files)?)
    } else {
        tracing::warn!(
            section = files.section,
            "TLS server verification is off: any certificate is accepted"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    match (files.cert, files.key) {
        (Some(cert), Some(key)) => {
            let cert_key = format!("{}.{}", files.section, files.cert_key);
            let key_key = format!("{}.{}", files.section, files.key_key);
            let chain = load_certs(&cert_key, cert)?;
            let key = load_key(&key_key, key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                tls_err(
                    &key_key,
                    format!(
                        "the client key does not match the client certificate {}: {e}",
                        cert.display()
                    ),
                )
            })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(tls_err(
            &format!("{}.{}", files.section, files.key_key),
            "a client certificate needs its private key",
        )),
        (None, Some(_)) => Err(tls_err(
            &format!("{}.{}", files.section, files.cert_key),
            "a client key needs its certificate",
        )),
    }
}

/// Accepts any server certificate (`tls_verify = false`).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn files<'a>(
        ca: Option<&'a Path>,
        cert: Option<&'a Path>,
        key: Option<&'a Path>,
    ) -> TlsFiles<'a> {
        TlsFiles {
            section: "s",
            ca_key: "tls_ca_cert",
            cert_key: "tls_cert",
            key_key: "tls_key",
            ca,
            cert,
            key,
            verify: ca.is_some(),
        }
    }

    #[test]
    fn missing_files_are_config_errors_naming_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let cert = dir.path().join("cert.pem");
        // PEM that decodes; its contents are never parsed as X.509 here.
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (f, key, path) in [
            (files(Some(&missing), None, None), "s.tls_ca_cert", &missing),
            (
                files(None, Some(&missing), Some(&cert)),
                "s.tls_cert",
                &missing,
            ),
            (
                files(None, Some(&cert), Some(&missing)),
                "s.tls_key",
                &missing,
            ),
            // A directory cannot be read as a file.
            (
                files(Some(dir.path()), None, None),
                "s.tls_ca_cert",
                &dir.path().to_path_buf(),
            ),
        ] {
            let e = client_config(&f).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
            let msg = e.to_string();
            assert!(msg.contains(key), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn bad_contents_stay_tls_errors() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = client_config(&files(Some(&not_pem), None, None)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
        assert!(e.to_string().contains("s.tls_ca_cert"), "{e}");
    }
}
