//! `extract_tokens` and `Verifier::verify_found`: each source, the base64url subprotocol
//! variant, subprotocol selection, disabled sources, malformed values and conflicts.

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use http::HeaderMap;
use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use portcullis::auth::{
    AuthFailure, AuthMethod, InvalidReason, SubprotocolWarning, TokenSource, extract_tokens,
    first_message_token,
};

use super::*;
use portcullis::wire::ClientMessage;

const ALL: [TokenSource; 4] = [
    TokenSource::Header,
    TokenSource::Subprotocol,
    TokenSource::Query,
    TokenSource::FirstMessage,
];

fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name.clone(), value.parse().unwrap());
    }
    map
}

/// Extracts with `sources` and verifies what was found.
fn authenticate(
    map: &HeaderMap,
    query: Option<&str>,
    sources: &[TokenSource],
) -> Result<(String, Option<TokenSource>), AuthFailure> {
    let found = extract_tokens(map, query, sources).found;
    let identity = verifier(&hs_config()).verify_found(&found, now())?;
    let AuthMethod::Jwt { source } = identity.method else {
        panic!("not a JWT identity")
    };
    Ok((identity.user_id, source))
}

#[test]
fn each_source_yields_its_token() {
    let token = hs256(&claims("alice"));
    let alice = |source| Ok(("alice".to_owned(), Some(source)));
    let bearer = headers(&[(AUTHORIZATION, &format!("Bearer {token}"))]);
    assert_eq!(
        authenticate(&bearer, None, &ALL),
        alice(TokenSource::Header)
    );
    let lower = headers(&[(AUTHORIZATION, &format!("bearer {token}"))]);
    assert_eq!(authenticate(&lower, None, &ALL), alice(TokenSource::Header));
    let offered = format!("portcullis.v1, jwt.{token}");
    let protocol = headers(&[(SEC_WEBSOCKET_PROTOCOL, &offered)]);
    assert_eq!(
        authenticate(&protocol, None, &ALL),
        alice(TokenSource::Subprotocol)
    );
    let query = format!("x=1&access_token={token}");
    assert_eq!(
        authenticate(&HeaderMap::new(), Some(&query), &ALL),
        alice(TokenSource::Query)
    );
    let message = ClientMessage::auth(&token).to_text();
    let found = first_message_token(&message).unwrap();
    assert_eq!(found.source, TokenSource::FirstMessage);
    let identity = verifier(&hs_config())
        .verify_found(&[found], now())
        .unwrap();
    assert_eq!(identity.user_id, "alice");
}

#[test]
fn subprotocol_token_may_be_base64url_padded_or_not() {
    let token = hs256(&claims("alice"));
    for encoded in [URL_SAFE_NO_PAD.encode(&token), URL_SAFE.encode(&token)] {
        let offered = format!("portcullis.v1, jwt.{encoded}");
        let map = headers(&[(SEC_WEBSOCKET_PROTOCOL, &offered)]);
        assert_eq!(
            authenticate(&map, None, &ALL),
            Ok(("alice".to_owned(), Some(TokenSource::Subprotocol))),
            "{encoded}"
        );
    }
    let map = headers(&[(SEC_WEBSOCKET_PROTOCOL, "portcullis.v1, jwt.!!notbase64")]);
    assert_eq!(
        authenticate(&map, None, &ALL),
        Err(AuthFailure::InvalidToken(InvalidReason::Malformed))
    );
}

#[test]
fn portcullis_v1_is_selected_and_the_token_never_echoed() {
    let token = hs256(&claims("alice"));
    let offered = format!("jwt.{token}, portcullis.v1");
    let extracted = extract_tokens(&headers(&[(SEC_WEBSOCKET_PROTOCOL, &offered)]), None, &ALL);
    assert_eq!(extracted.subprotocol.unwrap().as_str(), "portcullis.v1");
    assert_eq!(extracted.warning, None);
}

#[test]
fn only_jwt_entry_offered_selects_it_with_a_warning() {
    let token = hs256(&claims("alice"));
    let offered = format!("jwt.{token}");
    let extracted = extract_tokens(&headers(&[(SEC_WEBSOCKET_PROTOCOL, &offered)]), None, &ALL);
    let selected = extracted.subprotocol.clone().unwrap();
    assert_eq!(selected.as_str(), offered);
    assert_eq!(
        extracted.warning,
        Some(SubprotocolWarning::OnlyTokenEntryOffered)
    );
    let debug = format!("{extracted:?}");
    assert!(!debug.contains(&token), "{debug}");
    assert!(
        !SubprotocolWarning::OnlyTokenEntryOffered
            .to_string()
            .contains(&token)
    );
}

#[test]
fn disabled_sources_are_ignored_entirely() {
    let token = hs256(&claims("alice"));
    let offered = format!("jwt.{token}");
    let map = headers(&[(SEC_WEBSOCKET_PROTOCOL, &offered)]);
    let query = format!("access_token={token}");
    let extracted = extract_tokens(&map, Some(&query), &[TokenSource::Header]);
    assert!(extracted.found.is_empty());
    assert_eq!(extracted.subprotocol, None);
    assert_eq!(extracted.warning, None);
    assert_eq!(
        authenticate(&map, Some(&query), &[TokenSource::Header]),
        Err(AuthFailure::NoToken)
    );
    // A malformed Authorization header does not matter when the header source is off.
    let bad = headers(&[(AUTHORIZATION, "Basic dXNlcjpwYXNz")]);
    assert_eq!(
        authenticate(&bad, Some(&query), &[TokenSource::Query]),
        Ok(("alice".to_owned(), Some(TokenSource::Query)))
    );
}

#[test]
fn no_token_anywhere_is_no_token() {
    assert_eq!(
        authenticate(&HeaderMap::new(), Some("a=b"), &ALL),
        Err(AuthFailure::NoToken)
    );
}

#[test]
fn malformed_authorization_is_invalid_token() {
    let token = hs256(&claims("alice"));
    for value in [
        "Basic dXNlcjpwYXNz".to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer {token} extra"),
        format!("Token {token}"),
    ] {
        let map = headers(&[(AUTHORIZATION, &value)]);
        assert_eq!(
            authenticate(&map, None, &ALL),
            Err(AuthFailure::InvalidToken(
                InvalidReason::MalformedAuthorization
            )),
            "{value}"
        );
    }
    let twice = headers(&[
        (AUTHORIZATION, &format!("Bearer {token}")),
        (AUTHORIZATION, &format!("Bearer {token}")),
    ]);
    assert!(matches!(
        authenticate(&twice, None, &ALL),
        Err(AuthFailure::InvalidToken(_))
    ));
}

#[test]
fn different_subjects_across_sources_conflict() {
    let alice = hs256(&claims("alice"));
    let bob = hs256(&claims("bob"));
    let map = headers(&[(AUTHORIZATION, &format!("Bearer {alice}"))]);
    let query = format!("access_token={bob}");
    assert_eq!(
        authenticate(&map, Some(&query), &ALL),
        Err(AuthFailure::ConflictingTokens)
    );
    // Two tokens for the same subject are fine; the first source is reported.
    let again = hs256(&json!({"sub": "alice", "exp": at(900)}));
    let query = format!("access_token={again}");
    assert_eq!(
        authenticate(&map, Some(&query), &ALL),
        Ok(("alice".to_owned(), Some(TokenSource::Header)))
    );
    // An invalid token in any source fails the request, even beside a valid one.
    let expired = hs256(&json!({"sub": "alice", "exp": at(-5)}));
    let query = format!("access_token={expired}");
    assert_eq!(
        authenticate(&map, Some(&query), &ALL),
        Err(AuthFailure::TokenExpired)
    );
}

#[test]
fn query_values_are_percent_decoded() {
    let token = hs256(&claims("alice"));
    let escaped = token.replace('.', "%2E");
    let query = format!("access_token={escaped}");
    assert_eq!(
        authenticate(&HeaderMap::new(), Some(&query), &ALL),
        Ok(("alice".to_owned(), Some(TokenSource::Query)))
    );
    let broken = "access_token=%zz";
    assert_eq!(
        authenticate(&HeaderMap::new(), Some(broken), &ALL),
        Err(AuthFailure::InvalidToken(InvalidReason::Malformed))
    );
}

#[test]
fn first_message_must_be_auth() {
    assert_eq!(
        first_message_token(r#"{"type":"ping"}"#).unwrap_err(),
        AuthFailure::NoToken
    );
    assert_eq!(
        first_message_token("not json").unwrap_err(),
        AuthFailure::NoToken
    );
    assert_eq!(
        first_message_token(r#"{"type":"auth","token":7}"#).unwrap_err(),
        AuthFailure::InvalidToken(InvalidReason::Malformed)
    );
}
