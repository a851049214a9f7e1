//! PEM files for TLS, read the same way by the validator, the native TLS listener
//! (`server/tls.rs`) and the remote key source's HTTPS client (`auth/remote`): certificate
//! chains, private keys and whether they match, CA bundles, and certificate expiry.
//!
//! One crypto provider (aws-lc-rs) is named explicitly everywhere, so nothing depends on a
//! process-wide default being installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// What is wrong with a PEM file. Messages name the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No `CERTIFICATE` block, or one that is not an X.509 certificate.
    #[error("{path} holds no readable certificate{detail}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What the parser said, prefixed with `: `, or empty.
        detail: String,
    },
    /// No private key block, or one the crypto provider cannot use.
    #[error("{path} holds no usable private key{detail}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What the parser said, prefixed with `: `, or empty.
        detail: String,
    },
    /// The private key is not the certificate's.
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// The crypto provider of every TLS client and server here.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file, in file order; at least one, each a parseable X.509
/// certificate.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(path)?;
    let bad = |detail: String| PemError::Certificate {
        path: path.to_owned(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!(": {e}")))?;
    if certs.is_empty() {
        return Err(bad(String::new()));
    }
    for cert in &certs {
        not_after(cert).map_err(|e| bad(format!(": {e}")))?;
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| PemError::Key {
        path: path.to_owned(),
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => String::new(),
            other => format!(": {other}"),
        },
    })
}

/// The certificate chain and key as the TLS server uses them, refused when the key is not
/// the certificate's.
pub fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, PemError> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| PemError::Key {
            path: key_file.to_owned(),
            detail: format!(": {e}"),
        })?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // aws-lc-rs keys always expose their public key, so "unknown" means a key type
        // rustls cannot compare: refuse it rather than serve a chain we cannot vouch for.
        Err(_) => Err(PemError::KeyMismatch {
            cert: cert_file.to_owned(),
            key: key_file.to_owned(),
        }),
    }
}

/// The end of a certificate's validity (`notAfter`).
pub fn not_after(cert: &CertificateDer<'_>) -> Result<DateTime<Utc>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    let seconds = parsed.validity().not_after.timestamp();
    DateTime::from_timestamp(seconds, 0).ok_or_else(|| "notAfter out of range".to_owned())
}

/// The system store, read once per process: every model service, the declared tools, the
/// key source and each online check build a client from it.
static SYSTEM_ROOTS: std::sync::LazyLock<rustls::RootCertStore> = std::sync::LazyLock::new(|| {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "a system CA certificate could not be loaded");
    }
    let (_, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "system CA certificates rustls cannot use were skipped"
        );
    }
    roots
});

/// The trust anchors of the HTTPS client: the system store (`rustls-native-certs`, which
/// reads `SSL_CERT_FILE` / `SSL_CERT_DIR` when set) plus every certificate of `extra`.
/// Unreadable system certificates are skipped with a warning; `extra` must be whole.
pub fn client_roots(extra: Option<&Path>) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = SYSTEM_ROOTS.clone();
    if let Some(path) = extra {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| PemError::Certificate {
                path: path.to_owned(),
                detail: format!(": not a usable trust anchor ({e})"),
            })?;
        }
    }
    if roots.is_empty() {
        tracing::warn!(
            "no CA certificates found (install ca-certificates or set SSL_CERT_FILE); HTTPS fetches will fail"
        );
    }
    Ok(roots)
}

/// The start of every outgoing HTTPS client (model services, tools, the JWKS fetcher,
/// `check --online`): rustls over `roots` with this process's provider, and no redirects
/// (a redirect could carry a key or the user header to another host). Callers add their
/// timeouts.
pub fn http_client(roots: rustls::RootCertStore) -> Result<reqwest::ClientBuilder, String> {
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_a_foreign_key_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cert_file = write(dir.path(), "cert.pem", &cert);
        let key_file = write(dir.path(), "key.pem", &key);
        let other = write(dir.path(), "other.pem", &other_key);
        assert!(certified_key(&cert_file, &key_file).is_ok());
        assert!(matches!(
            certified_key(&cert_file, &other),
            Err(PemError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn files_without_the_expected_blocks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let cert_file = write(dir.path(), "cert.pem", &cert);
        let key_file = write(dir.path(), "key.pem", &key);
        let junk = write(dir.path(), "junk.pem", "not pem at all\n");
        assert!(matches!(
            read_certs(&key_file),
            Err(PemError::Certificate { .. })
        ));
        assert!(matches!(
            read_certs(&junk),
            Err(PemError::Certificate { .. })
        ));
        assert!(matches!(read_key(&cert_file), Err(PemError::Key { .. })));
        assert!(matches!(
            read_certs(&dir.path().join("absent.pem")),
            Err(PemError::Read { .. })
        ));
        let garbled = write(
            dir.path(),
            "garbled.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        assert!(matches!(
            read_certs(&garbled),
            Err(PemError::Certificate { .. })
        ));
    }

    #[test]
    fn not_after_reads_the_validity_end() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = params.self_signed(&key).unwrap();
        let end = not_after(cert.der()).unwrap();
        assert_eq!(end.to_rfc3339(), "2031-05-17T00:00:00+00:00");
    }
}
