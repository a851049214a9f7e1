//! JWKS documents (RFC 7517) turned into verification keys: each entry is kept only when it
//! is a signing key that fits the configured algorithms, and every entry left out is
//! reported (by `kid` and reason, never key material) so the caller can log it.
//!
//! Shared by the local JWKS file (read once at boot) and the remote key source (refreshed).

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One usable JWKS entry.
pub(crate) struct JwksKey {
    /// The entry's `kid`.
    pub kid: Option<String>,
    /// Algorithms this key may verify: its pinned `alg`, or what its type and curve allow,
    /// in both cases only among the configured ones.
    pub algorithms: Vec<Algorithm>,
    /// The key.
    pub key: DecodingKey,
}

/// An entry that was left out, and why (safe to log: no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// The entry's `kid`, when it had a readable one.
    pub kid: Option<String>,
    /// Why it is not used.
    pub reason: String,
}

/// The usable keys of a document, and the entries left out.
pub(crate) struct Parsed {
    pub keys: Vec<JwksKey>,
    pub skipped: Vec<Skipped>,
}

/// Parses a JWKS document. Only a document that is not a JSON object with a `keys` array is
/// an error; single entries that cannot be used are skipped (a JWKS shared with other
/// services may hold encryption keys and other key types).
pub(crate) fn parse(json: &[u8], configured: &[Algorithm]) -> Result<Parsed, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(json)?;
    let mut parsed = Parsed {
        keys: Vec::new(),
        skipped: Vec::new(),
    };
    for value in document.keys {
        let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
        match usable(value, configured) {
            Ok(key) => parsed.keys.push(key),
            Err(reason) => parsed.skipped.push(Skipped { kid, reason }),
        }
    }
    Ok(parsed)
}

fn usable(value: serde_json::Value, configured: &[Algorithm]) -> Result<JwksKey, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a JWK this server reads")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use = enc)".into());
    }
    let by_type = algorithms_of(&jwk.algorithm);
    let algorithms: Vec<Algorithm> = match &jwk.common.key_algorithm {
        None => by_type,
        Some(named) => match Algorithm::from_str(&named.to_string()) {
            Ok(alg) if by_type.contains(&alg) => vec![alg],
            Ok(alg) => return Err(format!("alg {alg:?} does not fit the key type")),
            Err(_) => return Err(format!("alg {named} is not a signature algorithm")),
        },
    };
    let fitting: Vec<Algorithm> = algorithms
        .into_iter()
        .filter(|a| configured.contains(a))
        .collect();
    if fitting.is_empty() {
        return Err(format!(
            "{} key fits none of the configured algorithms {configured:?}",
            key_type(&jwk.algorithm)
        ));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "its key parameters do not parse")?;
    Ok(JwksKey {
        kid: jwk.common.key_id,
        algorithms: fitting,
        key,
    })
}

/// What a key of this type (and curve) can verify. EC keys are bound to their curve's one
/// algorithm, so a P-384 key is never tried on an ES256 token.
fn algorithms_of(params: &AlgorithmParameters) -> Vec<Algorithm> {
    use Algorithm::*;
    match params {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![EdDSA]
        }
        AlgorithmParameters::OctetKey(_) => vec![HS256, HS384, HS512],
        _ => Vec::new(),
    }
}

fn key_type(params: &AlgorithmParameters) -> &'static str {
    match params {
        AlgorithmParameters::RSA(_) => "an RSA",
        AlgorithmParameters::EllipticCurve(_) => "an EC",
        AlgorithmParameters::OctetKeyPair(_) => "an OKP",
        AlgorithmParameters::OctetKey(_) => "a symmetric",
        _ => "an unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(keys: serde_json::Value) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    // A P-256 public key (RFC 7515 appendix A.3).
    fn p256() -> serde_json::Value {
        json!({"kty": "EC", "crv": "P-256",
               "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
               "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
    }

    #[test]
    fn ec_keys_fit_only_their_curves_algorithm() {
        let mut key = p256();
        key["kid"] = json!("ec");
        let parsed = parse(&doc(json!([key])), &[Algorithm::ES256, Algorithm::ES384]).unwrap();
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.keys[0].algorithms, vec![Algorithm::ES256]);
        let parsed = parse(&doc(json!([key])), &[Algorithm::ES384]).unwrap();
        assert!(parsed.keys.is_empty());
        assert_eq!(parsed.skipped[0].kid.as_deref(), Some("ec"));
        assert!(
            parsed.skipped[0].reason.contains("fits none"),
            "{:?}",
            parsed.skipped
        );
    }

    #[test]
    fn pinned_alg_outside_the_list_or_the_type_is_skipped_with_a_reason() {
        let mut pinned = p256();
        pinned["alg"] = json!("ES384");
        let mut enc = p256();
        enc["use"] = json!("enc");
        let mut oaep = p256();
        oaep["alg"] = json!("RSA-OAEP");
        let parsed = parse(
            &doc(json!([pinned, enc, oaep, {"kty": "nope"}])),
            &[Algorithm::ES256, Algorithm::ES384],
        )
        .unwrap();
        assert!(parsed.keys.is_empty());
        let reasons: Vec<&str> = parsed.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(
            reasons[0].contains("does not fit the key type"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("encryption"), "{reasons:?}");
        assert!(
            reasons[2].contains("not a signature algorithm"),
            "{reasons:?}"
        );
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(parse(br#"{"kty":"RSA"}"#, &[Algorithm::RS256]).is_err());
        assert!(parse(b"not json", &[Algorithm::RS256]).is_err());
    }
}
