//! Minting: a minted token passes the verifier of the same configuration; only HMAC can
//! mint.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use portcullis::auth::{MintError, MintRequest, mint_for_config, mint_token};

use super::*;

#[test]
fn minted_token_verifies_with_issuer_and_audience() {
    let mut config = hs_config();
    config.issuer = Some("portcullis-dev".into());
    config.audience = Some("portcullis".into());
    let token = mint_for_config(&config, "alice", Duration::from_secs(300), now()).unwrap();
    let identity = verifier(&config).verify(&token, now()).unwrap();
    assert_eq!(identity.user_id, "alice");
    assert_eq!(identity.expires_at.unwrap().timestamp(), at(300));
    let later = DateTime::from_timestamp(at(300), 0).unwrap();
    assert!(verifier(&config).verify(&token, later).is_err());
}

#[test]
fn only_hmac_can_mint() {
    let request = MintRequest {
        sub: "alice",
        ttl: Duration::from_secs(60),
        issuer: None,
        audience: None,
        now: now(),
    };
    let pem = KeySource::PublicKeyFile(fixture("test_only_rsa_public.pem"));
    assert!(matches!(
        mint_token(&pem, Algorithm::RS256, &request),
        Err(MintError::NotHmacKey)
    ));
    let secret = KeySource::Secret(Secret::new(SECRET));
    assert!(matches!(
        mint_token(&secret, Algorithm::RS256, &request),
        Err(MintError::NotHmacAlgorithm(Algorithm::RS256))
    ));
    let empty = MintRequest { sub: "", ..request };
    assert!(matches!(
        mint_token(&secret, Algorithm::HS256, &empty),
        Err(MintError::EmptySubject)
    ));
}
