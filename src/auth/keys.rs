//! The JWT verification key set, loaded once at boot from `auth.jwt.key`: an HMAC secret,
//! a PEM public key (RSA, EC or Ed25519, detected from the key itself), or a local JWKS.
//!
//! Anything wrong with the key material is an [`AuthSetupError`] at boot, never a surprise
//! on the first connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Header};

use super::failure::{AuthFailure, InvalidReason};
use crate::config::{JwtConfig, KeySource};

/// Why the key set could not be built; reported at boot, so it names paths but never
/// prints key or secret material.
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
    /// Remote JWKS fetching and caching is a later change.
    #[error("auth.jwt.jwks_url ({url}) is not supported yet; use jwks_file or public_key_file")]
    RemoteJwksUnsupported {
        /// The configured URL.
        url: String,
    },
}

/// One JWKS entry.
struct JwksKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

enum Keys {
    /// A secret or a PEM key: the only key, whatever `kid` a token names.
    Single(DecodingKey),
    /// A JWKS: selected by `kid`.
    Jwks(Vec<JwksKey>),
}

/// Verification keys, parsed once.
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
    /// Builds the key set for `config`; the algorithm list must be one family and the key
    /// must belong to it.
    pub fn load(config: &JwtConfig) -> Result<KeySet, AuthSetupError> {
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
                let key = parse_pem(path, &read(path)?)?;
                if key.family() != family {
                    return Err(mismatch(family_name(key.family())));
                }
                Keys::Single(key)
            }
            KeySource::JwksFile(path) => {
                let keys = parse_jwks(path, &read(path)?, family)?;
                if keys.is_empty() {
                    return Err(AuthSetupError::NoUsableJwk {
                        path: path.clone(),
                        expected: config.algorithms.clone(),
                    });
                }
                Keys::Jwks(keys)
            }
            KeySource::JwksUrl(url) => {
                return Err(AuthSetupError::RemoteJwksUnsupported { url: url.clone() });
            }
        };
        Ok(KeySet { family, keys })
    }

    /// The algorithm family every key belongs to.
    pub fn family(&self) -> AlgorithmFamily {
        self.family
    }

    /// The key that must verify a token with this header.
    pub(crate) fn select(&self, header: &Header) -> Result<&DecodingKey, AuthFailure> {
        let invalid = |reason| Err(AuthFailure::InvalidToken(reason));
        let keys = match &self.keys {
            Keys::Single(key) => return Ok(key),
            Keys::Jwks(keys) => keys,
        };
        let entry = match (&header.kid, keys.as_slice()) {
            (Some(kid), _) => match keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(entry) => entry,
                None => return invalid(InvalidReason::UnknownKey),
            },
            (None, [only]) => only,
            (None, _) => return invalid(InvalidReason::AmbiguousKey),
        };
        // A JWK that pins its algorithm must not be used with another one.
        match entry.alg {
            Some(alg) if alg != header.alg => invalid(InvalidReason::AlgorithmNotAllowed),
            _ => Ok(&entry.key),
        }
    }
}

fn single_family(algorithms: &[Algorithm]) -> Result<AlgorithmFamily, AuthSetupError> {
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

fn read(path: &Path) -> Result<Vec<u8>, AuthSetupError> {
    std::fs::read(path).map_err(|source| AuthSetupError::ReadFile {
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

/// Keeps the signing keys of `family`; entries of other families, encryption keys and key
/// types this crate cannot use are skipped, as a JWKS shared with other services may hold them.
fn parse_jwks(
    path: &Path,
    json: &[u8],
    family: AlgorithmFamily,
) -> Result<Vec<JwksKey>, AuthSetupError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(json).map_err(|error| AuthSetupError::BadJwks {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    let mut keys = Vec::new();
    for value in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(named) => match Algorithm::from_str(&named.to_string()) {
                Ok(alg) => Some(alg),
                // An encryption algorithm such as RSA-OAEP: not a signing key.
                Err(_) => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if key.family() == family {
            keys.push(JwksKey {
                kid: jwk.common.key_id,
                alg,
                key,
            });
        }
    }
    Ok(keys)
}
