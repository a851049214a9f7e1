//! Building the JWT key set (`components.jwt_keys`): the secret, PEM file or JWKS the
//! `[auth.jwt]` table names is read and parsed here, so an unreadable or unusable key is
//! a diagnostic before boot, in `check` as in `serve`.

use std::sync::Arc;

use crate::auth::{AuthSetupError, Verifier};
use crate::config::{Config, KeySource, RemoteLocation};
use crate::diagnostic::Finding;
use crate::keypath::{KeyPath, kp};

/// The verifier, or `None` (with findings) when the key set cannot be built or the
/// environment verifies no token.
pub fn build(config: &Config, findings: &mut Vec<Finding>) -> Option<Arc<Verifier>> {
    let jwt = config.auth.jwt.as_ref()?;
    if let KeySource::Secret(s) = &jwt.key
        && !s.is_set()
    {
        // `check --no-env`, or a missing variable the rules reported: nothing to build.
        return None;
    }
    match Verifier::from_config(jwt) {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            findings.push(finding(&e, key_path(&jwt.key)));
            None
        }
    }
}

/// The key that names where the key material comes from.
fn key_path(key: &KeySource) -> KeyPath {
    match key {
        KeySource::Secret(_) => kp("auth.jwt"),
        KeySource::PublicKeyFile(_) => kp("auth.jwt.public_key_file"),
        KeySource::JwksFile(_) => kp("auth.jwt.jwks_url"),
        KeySource::Remote(r) => match r.location {
            RemoteLocation::JwksUrl(_) => kp("auth.jwt.jwks_url"),
            RemoteLocation::OidcIssuer(_) => kp("auth.jwt.oidc_issuer"),
        },
    }
}

fn finding(e: &AuthSetupError, at: KeyPath) -> Finding {
    let (code, at, hint) = match e {
        AuthSetupError::NoAlgorithms | AuthSetupError::MixedFamilies => (
            "E_JWT_ALG_MIXED",
            kp("auth.jwt.algorithms"),
            "list algorithms of one family",
        ),
        AuthSetupError::KeyDoesNotMatchAlgorithms { .. } => (
            "E_JWT_KEY_FAMILY",
            at,
            "use a key of the family auth.jwt.algorithms names, or change the algorithms",
        ),
        AuthSetupError::EmptySecret => (
            "E_JWT_SECRET_SHORT",
            at,
            "set a secret of at least 32 bytes",
        ),
        AuthSetupError::ReadFile { .. } => (
            "E_KEY_FILE",
            at,
            "the path is relative to the config directory",
        ),
        AuthSetupError::BadPem { .. } => (
            "E_KEY_PARSE",
            at,
            "the file must hold a PEM public key (-----BEGIN PUBLIC KEY-----), RSA, EC P-256/P-384 or Ed25519",
        ),
        AuthSetupError::BadJwks { .. } => (
            "E_KEY_PARSE",
            at,
            "the file must be a JWKS document: {\"keys\": [ … ]}",
        ),
        AuthSetupError::NoUsableJwk { .. } => (
            "E_JWKS_NO_USABLE_KEY",
            at,
            "publish a signing key (kty and alg) of the family auth.jwt.algorithms names",
        ),
        // The remote key source's own errors carry their key, code and hint.
        AuthSetupError::BadUrl { .. }
        | AuthSetupError::CaFile(_)
        | AuthSetupError::HttpClient(_) => return e.finding(),
    };
    Finding::error(code, at, e.to_string(), hint)
}
