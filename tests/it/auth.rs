//! Integration tests of `portcullis::auth`, with the shared helpers: configurations, a fixed
//! clock, and signing with the test-only keys in `tests/fixtures/keys/`; the remote key
//! source against a local HTTPS identity provider (`idp.rs`).

mod bypass;
mod extract;
pub mod idp;
mod keys;
mod mint;
pub mod remote;
pub mod serve;
mod verify;

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::auth::Verifier;
use portcullis::config::{JwtConfig, KeySource, Secret};
use serde_json::{Value, json};

/// A 32-byte HMAC secret used only by these tests.
pub const SECRET: &str = "test-only-hmac-secret-0123456789abcdef";

/// The fixed "now" every test verifies against.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// `now()` plus `offset` seconds, as a JWT NumericDate.
pub fn at(offset: i64) -> i64 {
    now().timestamp() + offset
}

/// A test fixture key file.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

/// An HS256 configuration with no issuer/audience, zero leeway and a 4 KiB cap.
pub fn hs_config() -> JwtConfig {
    config(
        vec![Algorithm::HS256],
        KeySource::Secret(Secret::new(SECRET)),
    )
}

/// A configuration with the given algorithms and key.
pub fn config(algorithms: Vec<Algorithm>, key: KeySource) -> JwtConfig {
    JwtConfig {
        algorithms,
        key,
        issuer: None,
        audience: None,
        leeway_s: 0,
        max_token_bytes: 4096,
    }
}

pub fn verifier(config: &JwtConfig) -> Verifier {
    Verifier::from_config(config).expect("test configuration loads")
}

/// Claims valid at `now()` for `sub`.
pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iat": at(-10), "exp": at(600) })
}

/// Signs `claims` with `alg` and `key`, optionally naming a `kid`.
pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("test token signs")
}

/// An HS256 token signed with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

/// A token with an arbitrary header and an empty signature (for `alg: none`).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", part(header), part(claims))
}
