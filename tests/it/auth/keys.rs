//! `KeySet::load`: PEM public keys of each family, a local JWKS selected by `kid`, and the
//! setup errors a bad key configuration gives at boot.

use std::io::Write;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis::auth::{AuthFailure, AuthSetupError, InvalidReason, Verifier};
use portcullis::config::{RemoteKeySource, RemoteLocation};
use serde_json::json;

use super::*;

fn rsa_private() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("test_only_rsa_private.pem")).unwrap())
        .unwrap()
}

fn pem_config(alg: Algorithm, file: &str) -> JwtConfig {
    config(vec![alg], KeySource::PublicKeyFile(fixture(file)))
}

#[test]
fn rs256_with_pem_public_key() {
    let token = sign(Algorithm::RS256, &rsa_private(), None, &claims("alice"));
    let verifier = verifier(&pem_config(Algorithm::RS256, "test_only_rsa_public.pem"));
    assert_eq!(verifier.verify(&token, now()).unwrap().user_id, "alice");
    // An HMAC token signed with the public key's bytes (the classic key-confusion attack)
    // is refused by the algorithm list before any key is used.
    let pem = std::fs::read(fixture("test_only_rsa_public.pem")).unwrap();
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&pem),
        None,
        &claims("eve"),
    );
    assert_eq!(
        verifier.verify(&forged, now()),
        Err(AuthFailure::InvalidToken(
            InvalidReason::AlgorithmNotAllowed
        ))
    );
}

#[test]
fn es256_and_eddsa_with_pem_public_keys() {
    for (alg, private, public) in [
        (
            Algorithm::ES256,
            "test_only_ec_p256_private.pem",
            "test_only_ec_p256_public.pem",
        ),
        (
            Algorithm::EdDSA,
            "test_only_ed25519_private.pem",
            "test_only_ed25519_public.pem",
        ),
    ] {
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_ed_pem(&pem).unwrap(),
        };
        let token = sign(alg, &key, None, &claims("bob"));
        let verified = verifier(&pem_config(alg, public)).verify(&token, now());
        assert_eq!(verified.unwrap().user_id, "bob", "{alg:?}");
    }
}

/// A JWKS file holding the test RSA key as `rsa-1` and `rsa-2`, and the EC key as `ec-1`
/// (which an RS256 configuration must skip).
fn jwks_file(rsa_kids: &[&str]) -> tempfile::NamedTempFile {
    let mut keys = Vec::new();
    for kid in rsa_kids {
        let mut jwk = Jwk::from_encoding_key(&rsa_private(), Algorithm::RS256).unwrap();
        jwk.common.key_id = Some((*kid).to_owned());
        keys.push(jwk);
    }
    let ec_pem = std::fs::read(fixture("test_only_ec_p256_private.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&ec_pem).unwrap();
    let mut jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("ec-1".into());
    keys.push(jwk);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(serde_json::to_string(&JwkSet { keys }).unwrap().as_bytes())
        .unwrap();
    file
}

fn jwks_verifier(file: &tempfile::NamedTempFile) -> Verifier {
    verifier(&config(
        vec![Algorithm::RS256],
        KeySource::JwksFile(file.path().to_owned()),
    ))
}

#[test]
fn rs256_with_jwks_selects_by_kid() {
    let file = jwks_file(&["rsa-1", "rsa-2"]);
    let verifier = jwks_verifier(&file);
    let key = rsa_private();
    let token = sign(Algorithm::RS256, &key, Some("rsa-2"), &claims("carol"));
    assert_eq!(verifier.verify(&token, now()).unwrap().user_id, "carol");
    let unknown = sign(Algorithm::RS256, &key, Some("rsa-9"), &claims("carol"));
    assert_eq!(
        verifier.verify(&unknown, now()),
        Err(AuthFailure::InvalidToken(InvalidReason::UnknownKey))
    );
    let no_kid = sign(Algorithm::RS256, &key, None, &claims("carol"));
    assert_eq!(
        verifier.verify(&no_kid, now()),
        Err(AuthFailure::InvalidToken(InvalidReason::AmbiguousKey))
    );
}

#[test]
fn jwks_with_one_usable_key_accepts_a_token_without_kid() {
    let file = jwks_file(&["rsa-1"]);
    let token = sign(Algorithm::RS256, &rsa_private(), None, &claims("dave"));
    assert_eq!(
        jwks_verifier(&file).verify(&token, now()).unwrap().user_id,
        "dave"
    );
}

#[test]
fn jwk_pinned_algorithm_is_enforced() {
    let file = jwks_file(&["rsa-1"]);
    let verifier = verifier(&config(
        vec![Algorithm::RS256, Algorithm::RS512],
        KeySource::JwksFile(file.path().to_owned()),
    ));
    let token = sign(
        Algorithm::RS512,
        &rsa_private(),
        Some("rsa-1"),
        &claims("erin"),
    );
    assert_eq!(
        verifier.verify(&token, now()),
        Err(AuthFailure::InvalidToken(
            InvalidReason::AlgorithmNotAllowed
        ))
    );
}

#[test]
fn bad_key_configurations_fail_at_boot() {
    let load = |c: JwtConfig| Verifier::from_config(&c).unwrap_err();
    assert!(matches!(
        load(pem_config(Algorithm::RS256, "test_only_ec_p256_public.pem")),
        AuthSetupError::KeyDoesNotMatchAlgorithms {
            found: "an EC public key",
            ..
        }
    ));
    assert!(matches!(
        load(config(
            vec![Algorithm::RS256],
            KeySource::Secret(Secret::new(SECRET))
        )),
        AuthSetupError::KeyDoesNotMatchAlgorithms { .. }
    ));
    assert!(matches!(
        load(pem_config(Algorithm::RS256, "README.md")),
        AuthSetupError::BadPem { .. }
    ));
    assert!(matches!(
        load(pem_config(Algorithm::RS256, "missing.pem")),
        AuthSetupError::ReadFile { .. }
    ));
    assert!(matches!(
        load(config(
            vec![Algorithm::HS256, Algorithm::RS256],
            KeySource::Secret(Secret::new(SECRET))
        )),
        AuthSetupError::MixedFamilies
    ));
    assert!(matches!(
        load(config(vec![], KeySource::Secret(Secret::new(SECRET)))),
        AuthSetupError::NoAlgorithms
    ));
    let remote = |location| {
        KeySource::Remote(RemoteKeySource {
            location,
            ca_file: None,
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(600),
            timeout: Duration::from_secs(5),
            allow_http: false,
        })
    };
    let plain = load(config(
        vec![Algorithm::RS256],
        remote(RemoteLocation::JwksUrl("http://id.example/jwks".into())),
    ));
    assert!(matches!(plain, AuthSetupError::BadUrl { .. }), "{plain:?}");
    let finding = plain.finding();
    assert_eq!(
        (finding.code, finding.path.to_string().as_str()),
        ("E_JWKS_URL", "auth.jwt.jwks_url")
    );
    let relative = load(config(
        vec![Algorithm::RS256],
        remote(RemoteLocation::OidcIssuer("idp.example".into())),
    ));
    assert_eq!(relative.code(), "E_OIDC_ISSUER", "{relative:?}");
    let missing_ca = load(config(
        vec![Algorithm::RS256],
        KeySource::Remote(RemoteKeySource {
            ca_file: Some(fixture("absent-ca.pem")),
            ..match remote(RemoteLocation::JwksUrl("https://id.example/jwks".into())) {
                KeySource::Remote(r) => r,
                _ => unreachable!(),
            }
        }),
    ));
    assert_eq!(
        (missing_ca.code(), missing_ca.key()),
        ("E_CA_FILE", "auth.jwt.ca_file")
    );
    let file = jwks_file(&[]);
    assert!(matches!(
        load(config(
            vec![Algorithm::RS256],
            KeySource::JwksFile(file.path().to_owned())
        )),
        AuthSetupError::NoUsableJwk { .. }
    ));
    let mut not_jwks = tempfile::NamedTempFile::new().unwrap();
    not_jwks
        .write_all(json!({"kty": "RSA"}).to_string().as_bytes())
        .unwrap();
    assert!(matches!(
        load(config(
            vec![Algorithm::RS256],
            KeySource::JwksFile(not_jwks.path().to_owned())
        )),
        AuthSetupError::BadJwks { .. }
    ));
}

#[test]
fn setup_errors_and_debug_never_show_the_secret() {
    let error = Verifier::from_config(&config(
        vec![Algorithm::RS256],
        KeySource::Secret(Secret::new(SECRET)),
    ))
    .unwrap_err();
    assert!(!error.to_string().contains(SECRET));
    let debug = format!("{:?}", verifier(&hs_config()));
    assert!(!debug.contains(SECRET), "{debug}");
}
