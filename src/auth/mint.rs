//! Minting HMAC tokens for `portcullis token` and the `dev_token` handler. Only shared
//! secrets can sign here: with a public key or JWKS the private key lives elsewhere.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::config::{JwtConfig, KeySource};

/// Why no token was minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The key is not a shared secret.
    #[error("tokens can only be minted with an HMAC secret (auth.jwt.key is a public key or JWKS)")]
    NotHmacKey,
    /// The algorithm is not HS256/384/512.
    #[error("tokens can only be minted with an HMAC algorithm, not {0:?}")]
    NotHmacAlgorithm(Algorithm),
    /// `sub` is empty; the verifier would refuse the token.
    #[error("the subject (user id) is empty")]
    EmptySubject,
    /// The TTL does not fit a timestamp.
    #[error("the token lifetime is too long")]
    TtlTooLong,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

/// What goes into a minted token.
#[derive(Debug, Clone)]
pub struct MintRequest<'a> {
    /// `sub`.
    pub sub: &'a str,
    /// `exp - iat`.
    pub ttl: Duration,
    /// `iss`, when set.
    pub issuer: Option<&'a str>,
    /// `aud`, when set.
    pub audience: Option<&'a str>,
    /// `iat`.
    pub now: DateTime<Utc>,
}

/// Signs a token with the HMAC secret in `key`.
pub fn mint_token(
    key: &KeySource,
    alg: Algorithm,
    request: &MintRequest<'_>,
) -> Result<String, MintError> {
    let KeySource::Secret(secret) = key else {
        return Err(MintError::NotHmacKey);
    };
    if alg.family() != AlgorithmFamily::Hmac {
        return Err(MintError::NotHmacAlgorithm(alg));
    }
    if request.sub.is_empty() {
        return Err(MintError::EmptySubject);
    }
    let iat = request.now.timestamp();
    let ttl = i64::try_from(request.ttl.as_secs()).map_err(|_| MintError::TtlTooLong)?;
    let exp = iat.checked_add(ttl).ok_or(MintError::TtlTooLong)?;
    let mut claims = Map::new();
    claims.insert("sub".into(), request.sub.into());
    claims.insert("iat".into(), iat.into());
    claims.insert("exp".into(), exp.into());
    if let Some(issuer) = request.issuer {
        claims.insert("iss".into(), issuer.into());
    }
    if let Some(audience) = request.audience {
        claims.insert("aud".into(), audience.into());
    }
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    Ok(jsonwebtoken::encode(
        &Header::new(alg),
        &Value::Object(claims),
        &key,
    )?)
}

/// Mints a token the configured verifier accepts: its first algorithm, its issuer and
/// audience.
pub fn mint_for_config(
    config: &JwtConfig,
    sub: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<String, MintError> {
    let alg = config
        .algorithms
        .first()
        .copied()
        .unwrap_or(Algorithm::HS256);
    let request = MintRequest {
        sub,
        ttl,
        issuer: config.issuer.as_deref(),
        audience: config.audience.as_deref(),
        now,
    };
    mint_token(&config.key, alg, &request)
}
