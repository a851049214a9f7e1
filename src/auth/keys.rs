//! The local JWT verification key set, loaded once at boot from `auth.jwt.key`: an HMAC
//! secret, a PEM public key (RSA, EC or Ed25519, detected from the key itself), or a local
//! JWKS; and [`AuthSetupError`], every way building any key source (remote ones included)
//! can fail, with its config key, code and hint.
//!
//! Anything wrong with the key material is an [`AuthSetupError`] at boot, never a surprise
//! on the first connection.

use std::fmt;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Header};

use super::failure::{AuthFailure, InvalidReason};
use super::jwk::{self, JwksKey};
use crate::config::{JwtConfig, KeySource};

/// Why the key set could not be built; reported at boot (and by the compile step in
/// `check`), so it names paths and config keys but never prints key or secret material.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// `auth.jwt.algorithms` is empty.
    #[error("auth.jwt.algorithms is empty; name at least one algorithm")]
    NoAlgorithms,
    /// The list mixes families (e.g. HS256 with RS256), which invites key confusion.
    #[error("auth.jwt.algorithms mixes algorithm families; use one family")]
    MixedFamilies,
    /// The key does not fit the configured algorithms.
    #[error("auth.jwt.key is {found} but auth.jwt.algorithms are {expected:?}")]
    KeyDoesNotMatchAlgorithms {
        /// What the key is.
        found: &'static str,
        /// The configured list.
        expected: Vec<Algorithm>,
    },
    /// The HMAC secret is empty.
    #[error("the HMAC secret is empty")]
    EmptySecret,
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    ReadFile {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM file holds no RSA, EC or Ed25519 public key.
    #[error("{path} is not a PEM public key (RSA, EC P-256/P-384 or Ed25519)")]
    BadPem {
        /// The file.
        path: PathBuf,
    },
    /// The JWKS file is not a JSON object with a `keys` array.
    #[error("{path} is not a JWKS document: {reason}")]
    BadJwks {
        /// The file.
        path: PathBuf,
        /// The JSON error (public key material only, safe to show).
        reason: String,
    },
    /// The JWKS has no signing key usable with the configured algorithms.
    #[error("{path} has no signing key for algorithms {expected:?}")]
    NoUsableJwk {
        /// The file.
        path: PathBuf,
        /// The configured list.
        expected: Vec<Algorithm>,
    },
    /// `jwks_url` / `oidc_issuer` is not a URL this server may fetch.
    #[error("{key} `{url}` cannot be fetched: {reason}")]
    BadUrl {
        /// `auth.jwt.jwks_url` or `auth.jwt.oidc_issuer`.
        key: &'static str,
        /// The configured URL (public: it names a key server, not a secret).
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// `auth.jwt.ca_file` cannot be used as trust anchors.
    #[error("auth.jwt.ca_file: {0}")]
    CaFile(crate::tls::PemError),
    /// The HTTPS client could not be built (a TLS setting the provider refuses).
    #[error("the HTTPS client for the key source cannot be built: {0}")]
    HttpClient(String),
}

impl AuthSetupError {
    /// The stable code: the one `compile/keys.rs` and the validator use for the same mistake.
    pub fn code(&self) -> &'static str {
        match self {
            AuthSetupError::NoAlgorithms | AuthSetupError::MixedFamilies => "E_JWT_ALG_MIXED",
            AuthSetupError::KeyDoesNotMatchAlgorithms { .. } => "E_JWT_KEY_FAMILY",
            AuthSetupError::EmptySecret => "E_JWT_SECRET_SHORT",
            AuthSetupError::ReadFile { .. } => "E_KEY_FILE",
            AuthSetupError::BadPem { .. } | AuthSetupError::BadJwks { .. } => "E_KEY_PARSE",
            AuthSetupError::NoUsableJwk { .. } => "E_JWKS_NO_USABLE_KEY",
            AuthSetupError::BadUrl { key, .. } if key.ends_with("oidc_issuer") => "E_OIDC_ISSUER",
            AuthSetupError::BadUrl { .. } => "E_JWKS_URL",
            AuthSetupError::CaFile(_) => "E_CA_FILE",
            AuthSetupError::HttpClient(_) => "E_JWKS_CLIENT",
        }
    }

    /// The configuration key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            AuthSetupError::NoAlgorithms
            | AuthSetupError::MixedFamilies
            | AuthSetupError::KeyDoesNotMatchAlgorithms { .. } => "auth.jwt.algorithms",
            AuthSetupError::EmptySecret => "auth.jwt.secret_env",
            AuthSetupError::ReadFile { key, .. } | AuthSetupError::BadUrl { key, .. } => key,
            AuthSetupError::BadPem { .. } => "auth.jwt.public_key_file",
            AuthSetupError::BadJwks { .. } | AuthSetupError::NoUsableJwk { .. } => {
                "auth.jwt.jwks_url"
            }
            AuthSetupError::CaFile(_) => "auth.jwt.ca_file",
            AuthSetupError::HttpClient(_) => "auth.jwt",
        }
    }

    /// How to fix it.
    pub fn hint(&self) -> &'static str {
        match self {
            AuthSetupError::NoAlgorithms => {
                "list the algorithm your issuer signs with, e.g. [\"RS256\"]"
            }
            AuthSetupError::MixedFamilies => "keep algorithms of one family only",
            AuthSetupError::KeyDoesNotMatchAlgorithms { .. } => {
                "match the key source to the algorithm family"
            }
            AuthSetupError::EmptySecret => "set the secret variable (`openssl rand -base64 48`)",
            AuthSetupError::ReadFile { .. } => "the path is relative to the config directory",
            AuthSetupError::BadPem { .. } => {
                "export the issuer's public key as PEM (`openssl pkey -pubout`)"
            }
            AuthSetupError::BadJwks { .. } | AuthSetupError::NoUsableJwk { .. } => {
                "use a JWKS ({\"keys\": [...]}) with a signing key of the configured algorithms"
            }
            AuthSetupError::BadUrl { .. } => {
                "use an https:// URL with a host (http:// only in development and test)"
            }
            AuthSetupError::CaFile(_) => "give a PEM file of CA certificates (BEGIN CERTIFICATE)",
            AuthSetupError::HttpClient(_) => "this is a portcullis bug; please report it",
        }
    }

    /// The error as a validator finding, for the compile step in `check`.
    pub fn finding(&self) -> crate::diagnostic::Finding {
        crate::diagnostic::Finding::error(
            self.code(),
            crate::keypath::kp(self.key()),
            self.to_string(),
            self.hint(),
        )
    }
}

enum Keys {
    /// A secret or a PEM key: the only key, whatever `kid` a token names.
    Single(DecodingKey),
    /// A JWKS: selected by `kid`.
    Jwks(Vec<JwksKey>),
}

/// Verification keys read once at boot (a secret, a PEM key or a local JWKS file).
pub struct KeySet {
    family: AlgorithmFamily,
    keys: Keys,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = match &self.keys {
            Keys::Single(_) => 1,
            Keys::Jwks(keys) => keys.len(),
        };
        f.debug_struct("KeySet")
            .field("family", &self.family)
            .field("keys", &count)
            .finish()
    }
}

impl KeySet {
    /// Builds the key set for a local key source; the algorithm list must be one family and
    /// the key must belong to it. A remote source is not a `KeySet` (see `auth::remote`).
    pub(crate) fn load(config: &JwtConfig) -> Result<KeySet, AuthSetupError> {
        let family = single_family(&config.algorithms)?;
        let mismatch = |found| AuthSetupError::KeyDoesNotMatchAlgorithms {
            found,
            expected: config.algorithms.clone(),
        };
        let keys = match &config.key {
            KeySource::Secret(secret) => {
                if family != AlgorithmFamily::Hmac {
                    return Err(mismatch("an HMAC secret"));
                }
                if secret.expose().is_empty() {
                    return Err(AuthSetupError::EmptySecret);
                }
                Keys::Single(DecodingKey::from_secret(secret.expose().as_bytes()))
            }
            KeySource::PublicKeyFile(path) => {
                let key = parse_pem(path, &read(path, "auth.jwt.public_key_file")?)?;
                if key.family() != family {
                    return Err(mismatch(family_name(key.family())));
                }
                Keys::Single(key)
            }
            KeySource::JwksFile(path) => {
                let json = read(path, "auth.jwt.jwks_url")?;
                let parsed =
                    jwk::parse(&json, &config.algorithms).map_err(|e| AuthSetupError::BadJwks {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                log_skipped(&path.display().to_string(), &parsed.skipped);
                if parsed.keys.is_empty() {
                    return Err(AuthSetupError::NoUsableJwk {
                        path: path.clone(),
                        expected: config.algorithms.clone(),
                    });
                }
                Keys::Jwks(parsed.keys)
            }
            KeySource::Remote(_) => unreachable!("remote key sources are built by auth::remote"),
        };
        Ok(KeySet { family, keys })
    }

    /// The algorithm family every key belongs to.
    pub fn family(&self) -> AlgorithmFamily {
        self.family
    }

    /// The key that must verify a token with this header.
    pub(crate) fn select(&self, header: &Header) -> Result<&DecodingKey, AuthFailure> {
        match &self.keys {
            Keys::Single(key) => Ok(key),
            Keys::Jwks(keys) => select(keys.iter(), keys.len(), header),
        }
    }
}

/// Picks a JWKS entry: by `kid` when the token names one, else the only key of the set.
/// A key bound to other algorithms than the token's is refused, never tried.
pub(crate) fn select<'a>(
    mut keys: impl Iterator<Item = &'a JwksKey>,
    count: usize,
    header: &Header,
) -> Result<&'a DecodingKey, AuthFailure> {
    let invalid = |reason| Err(AuthFailure::InvalidToken(reason));
    let entry = match (&header.kid, count) {
        (Some(kid), _) => match keys.find(|k| k.kid.as_deref() == Some(kid)) {
            Some(entry) => entry,
            None => return invalid(InvalidReason::UnknownKey),
        },
        (None, 1) => keys
            .next()
            .ok_or(AuthFailure::InvalidToken(InvalidReason::UnknownKey))?,
        (None, _) => return invalid(InvalidReason::AmbiguousKey),
    };
    match entry.algorithms.contains(&header.alg) {
        true => Ok(&entry.key),
        false => invalid(InvalidReason::AlgorithmNotAllowed),
    }
}

/// Logs the JWKS entries left out, once per load: a key the issuer signs with but that is
/// skipped here would otherwise show up only as refused tokens.
pub(crate) fn log_skipped(source: &str, skipped: &[jwk::Skipped]) {
    for entry in skipped {
        tracing::warn!(source, kid = ?entry.kid, reason = %entry.reason, "JWKS entry ignored");
    }
}

pub(crate) fn single_family(algorithms: &[Algorithm]) -> Result<AlgorithmFamily, AuthSetupError> {
    let first = algorithms.first().ok_or(AuthSetupError::NoAlgorithms)?;
    if algorithms.iter().any(|a| a.family() != first.family()) {
        return Err(AuthSetupError::MixedFamilies);
    }
    Ok(first.family())
}

fn family_name(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Hmac => "an HMAC key",
        AlgorithmFamily::Rsa => "an RSA public key",
        AlgorithmFamily::Ec => "an EC public key",
        AlgorithmFamily::Ed => "an Ed25519 public key",
    }
}

fn read(path: &Path, key: &'static str) -> Result<Vec<u8>, AuthSetupError> {
    std::fs::read(path).map_err(|source| AuthSetupError::ReadFile {
        key,
        path: path.to_owned(),
        source,
    })
}

/// The PEM's own key type decides the family (the parser classifies by OID), so an EC key
/// configured with RS256 is reported as a mismatch rather than as an unreadable file.
fn parse_pem(path: &Path, pem: &[u8]) -> Result<DecodingKey, AuthSetupError> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| AuthSetupError::BadPem {
            path: path.to_owned(),
        })
}
