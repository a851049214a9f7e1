//! `Verifier::verify`: algorithms, signatures, required claims, times, issuer/audience and
//! the length cap, each refused for the reason it should be.

use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis::auth::{AuthFailure, AuthMethod, InvalidReason};
use serde_json::json;

use super::*;

fn invalid(reason: InvalidReason) -> Result<String, AuthFailure> {
    Err(AuthFailure::InvalidToken(reason))
}

/// Verifies with `config` and returns the user id, so expectations read as one line.
fn check(config: &JwtConfig, token: &str) -> Result<String, AuthFailure> {
    verifier(config).verify(token, now()).map(|id| id.user_id)
}

#[test]
fn valid_hs256_yields_identity() {
    let identity = verifier(&hs_config())
        .verify(&hs256(&claims("alice")), now())
        .unwrap();
    assert_eq!(identity.user_id, "alice");
    assert_eq!(identity.expires_at.unwrap().timestamp(), at(600));
    assert_eq!(identity.issued_at.unwrap().timestamp(), at(-10));
    assert_eq!(identity.method, AuthMethod::Jwt { source: None });
    assert_eq!(identity.method.label(), "jwt");
}

#[test]
fn wrong_secret_is_bad_signature() {
    let other = EncodingKey::from_secret(b"another-test-secret-0123456789abcdef");
    let token = sign(Algorithm::HS256, &other, None, &claims("alice"));
    assert_eq!(
        check(&hs_config(), &token),
        invalid(InvalidReason::BadSignature)
    );
}

#[test]
fn alg_none_is_refused() {
    let token = unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims("alice"));
    assert_eq!(
        check(&hs_config(), &token),
        invalid(InvalidReason::AlgorithmNotAllowed)
    );
    let token = unsigned(&json!({"alg": "None"}), &claims("alice"));
    assert_eq!(
        check(&hs_config(), &token),
        invalid(InvalidReason::AlgorithmNotAllowed)
    );
}

#[test]
fn algorithm_outside_the_list_is_refused() {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token = sign(Algorithm::HS512, &key, None, &claims("alice"));
    assert_eq!(
        check(&hs_config(), &token),
        invalid(InvalidReason::AlgorithmNotAllowed)
    );
    // The same token passes once HS512 is listed, so the refusal above was the list.
    let both = config(
        vec![Algorithm::HS256, Algorithm::HS512],
        KeySource::Secret(Secret::new(SECRET)),
    );
    assert_eq!(check(&both, &token), Ok("alice".into()));
}

#[test]
fn garbage_is_malformed() {
    for token in ["", "abc", "a.b.c", "a.b", "...."] {
        assert_eq!(
            check(&hs_config(), token),
            invalid(InvalidReason::Malformed),
            "{token:?}"
        );
    }
}

#[test]
fn expiry_honours_leeway() {
    let token = hs256(&json!({"sub": "alice", "exp": at(-10)}));
    assert_eq!(check(&hs_config(), &token), Err(AuthFailure::TokenExpired));
    let mut lenient = hs_config();
    lenient.leeway_s = 30;
    assert_eq!(check(&lenient, &token), Ok("alice".into()));
    let token = hs256(&json!({"sub": "alice", "exp": at(-31)}));
    assert_eq!(check(&lenient, &token), Err(AuthFailure::TokenExpired));
    // `exp` itself is the first instant the token is no longer valid.
    let token = hs256(&json!({"sub": "alice", "exp": at(0)}));
    assert_eq!(check(&hs_config(), &token), Err(AuthFailure::TokenExpired));
}

#[test]
fn not_before_in_the_future_is_refused() {
    let token = hs256(&json!({"sub": "alice", "exp": at(600), "nbf": at(20)}));
    assert_eq!(
        check(&hs_config(), &token),
        invalid(InvalidReason::NotYetValid)
    );
    let mut lenient = hs_config();
    lenient.leeway_s = 30;
    assert_eq!(check(&lenient, &token), Ok("alice".into()));
}

#[test]
fn sub_and_exp_are_required() {
    let no_sub = hs256(&json!({"exp": at(600)}));
    assert_eq!(
        check(&hs_config(), &no_sub),
        invalid(InvalidReason::MissingClaim("sub"))
    );
    let empty_sub = hs256(&json!({"sub": "", "exp": at(600)}));
    assert_eq!(
        check(&hs_config(), &empty_sub),
        invalid(InvalidReason::MissingClaim("sub"))
    );
    let no_exp = hs256(&json!({"sub": "alice"}));
    assert_eq!(
        check(&hs_config(), &no_exp),
        invalid(InvalidReason::MissingClaim("exp"))
    );
    let text_exp = hs256(&json!({"sub": "alice", "exp": "tomorrow"}));
    assert_eq!(
        check(&hs_config(), &text_exp),
        invalid(InvalidReason::MissingClaim("exp"))
    );
}

#[test]
fn issuer_and_audience_must_match_when_configured() {
    let mut strict = hs_config();
    strict.issuer = Some("https://id.example".into());
    strict.audience = Some("portcullis".into());
    let good = json!({"sub": "a", "exp": at(60), "iss": "https://id.example", "aud": "portcullis"});
    assert_eq!(check(&strict, &hs256(&good)), Ok("a".into()));
    let many =
        json!({"sub": "a", "exp": at(60), "iss": "https://id.example", "aud": ["x", "portcullis"]});
    assert_eq!(check(&strict, &hs256(&many)), Ok("a".into()));
    let bad_iss =
        json!({"sub": "a", "exp": at(60), "iss": "https://evil.example", "aud": "portcullis"});
    assert_eq!(
        check(&strict, &hs256(&bad_iss)),
        invalid(InvalidReason::IssuerMismatch)
    );
    let bad_aud = json!({"sub": "a", "exp": at(60), "iss": "https://id.example", "aud": "other"});
    assert_eq!(
        check(&strict, &hs256(&bad_aud)),
        invalid(InvalidReason::AudienceMismatch)
    );
    let no_iss = json!({"sub": "a", "exp": at(60), "aud": "portcullis"});
    assert_eq!(
        check(&strict, &hs256(&no_iss)),
        invalid(InvalidReason::MissingClaim("iss"))
    );
    let no_aud = json!({"sub": "a", "exp": at(60), "iss": "https://id.example"});
    assert_eq!(
        check(&strict, &hs256(&no_aud)),
        invalid(InvalidReason::MissingClaim("aud"))
    );
}

#[test]
fn oversize_token_is_refused_before_parsing() {
    let mut small = hs_config();
    small.max_token_bytes = 64;
    let token = hs256(&claims("alice"));
    assert!(token.len() > 64);
    assert_eq!(
        check(&small, &token),
        Err(AuthFailure::TokenTooLarge {
            len: token.len(),
            max: 64
        })
    );
    // Not even parsed: garbage of the same length gets the same answer.
    let garbage = "x".repeat(65);
    assert!(matches!(
        check(&small, &garbage),
        Err(AuthFailure::TokenTooLarge { .. })
    ));
}

#[test]
fn failures_never_contain_the_token() {
    let token = hs256(&json!({"sub": "alice-secret-sub", "exp": at(-100)}));
    let failure = check(&hs_config(), &token).unwrap_err();
    for text in [
        failure.to_string(),
        format!("{failure:?}"),
        failure.error_message().to_string(),
    ] {
        assert!(
            !text.contains(&token) && !text.contains("alice-secret-sub"),
            "{text}"
        );
    }
    assert_eq!(failure.close_code().code(), 4401);
    assert_eq!(failure.http_status().as_u16(), 401);
}

#[test]
fn critical_header_extensions_are_refused() {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp-ext".into()]);
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token = jsonwebtoken::encode(&header, &claims("alice"), &key).unwrap();
    assert_eq!(
        check(&hs_config(), &token),
        invalid(InvalidReason::Malformed)
    );
}

#[test]
fn refresh_keeps_the_user() {
    let verifier = verifier(&hs_config());
    let current = verifier.verify(&hs256(&claims("alice")), now()).unwrap();
    let later = json!({"sub": "alice", "exp": at(1200)});
    let fresh = verifier.verify(&hs256(&later), now()).unwrap();
    assert_eq!(
        current
            .refresh(fresh)
            .unwrap()
            .expires_at
            .unwrap()
            .timestamp(),
        at(1200)
    );
    let other = verifier.verify(&hs256(&claims("bob")), now()).unwrap();
    let refused = current.refresh(other).unwrap_err();
    assert_eq!(
        (refused.code(), refused.close_code().code()),
        ("FORBIDDEN", 4403)
    );
}

#[test]
fn iss_must_be_one_string_for_every_key_source() {
    let mut pinned = hs_config();
    pinned.issuer = Some("https://issuer.example/".into());
    let mut with_array = claims("alice");
    with_array["iss"] = json!(["https://evil.example/", "https://issuer.example/"]);
    let refused = invalid(InvalidReason::MissingClaim("iss"));
    assert_eq!(check(&pinned, &hs256(&with_array)), refused);
    // Without a configured issuer an array is still not a valid `iss`.
    assert_eq!(check(&hs_config(), &hs256(&with_array)), refused);
    let mut single = claims("alice");
    single["iss"] = json!("https://issuer.example/");
    assert_eq!(check(&pinned, &hs256(&single)), Ok("alice".into()));
    single["iss"] = json!("https://evil.example/");
    assert_eq!(
        check(&pinned, &hs256(&single)),
        invalid(InvalidReason::IssuerMismatch)
    );
}
