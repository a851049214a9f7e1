//! Why a caller was refused, and the one mapping from that to what the client sees: the
//! stable error code, the WebSocket close code, and the HTTP answer for handshake rejection.
//!
//! Messages are fixed text chosen here, never built from the token or from parser errors
//! (a JSON error can quote claim values), so a failure is always safe to log and send.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::wire::CloseCode;
use crate::wire::ErrorCode;

/// What exactly was wrong with a token that is refused as `INVALID_TOKEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// Not three base64url parts with JSON header and claims.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `Authorization` present but not exactly `Bearer <token>`.
    #[error("the Authorization header is not `Bearer <token>`")]
    MalformedAuthorization,
    /// The header's `alg` is not in `auth.jwt.algorithms` (`none` never is).
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAllowed,
    /// Signature does not verify with the selected key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// `kid` names no key in the key set.
    #[error("the token's key id is not in the key set")]
    UnknownKey,
    /// No `kid`, and the key set holds several keys.
    #[error("the token has no key id and the key set has several keys")]
    AmbiguousKey,
    /// A required claim is absent or has the wrong type.
    #[error("the token lacks a valid `{0}` claim")]
    MissingClaim(&'static str),
    /// `iss` differs from `auth.jwt.issuer`.
    #[error("the token's issuer is not accepted")]
    IssuerMismatch,
    /// `aud` does not contain `auth.jwt.audience`.
    #[error("the token's audience is not accepted")]
    AudienceMismatch,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
}

/// A refused authentication attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No enabled source carried a token.
    #[error("no token was presented")]
    NoToken,
    /// The token is not acceptable.
    #[error("{0}")]
    InvalidToken(InvalidReason),
    /// `exp` passed (beyond the leeway).
    #[error("the token has expired")]
    TokenExpired,
    /// Longer than `auth.jwt.max_token_bytes`; refused before any parsing.
    #[error("the token is {len} bytes, more than the {max} accepted")]
    TokenTooLarge {
        /// Length presented.
        len: usize,
        /// Configured cap.
        max: usize,
    },
    /// Two sources carried valid tokens for different subjects.
    #[error("tokens in different places name different users")]
    ConflictingTokens,
    /// Authenticated, but not allowed here.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// No `auth` message arrived within `auth.first_message_timeout_ms`.
    #[error("no auth message within the first-message timeout")]
    AuthTimeout,
    /// The key source cannot be reached (remote JWKS down); the client should retry.
    #[error("authentication is temporarily unavailable: {0}")]
    AuthUnavailable(&'static str),
}

impl AuthFailure {
    /// The stable code clients and dashboards match on.
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::NoToken => ErrorCode::NoToken.as_str(),
            AuthFailure::InvalidToken(_) => ErrorCode::InvalidToken.as_str(),
            AuthFailure::TokenExpired => ErrorCode::TokenExpired.as_str(),
            AuthFailure::TokenTooLarge { .. } => ErrorCode::TokenTooLarge.as_str(),
            AuthFailure::ConflictingTokens => ErrorCode::ConflictingTokens.as_str(),
            AuthFailure::Forbidden(_) => ErrorCode::Forbidden.as_str(),
            AuthFailure::AuthTimeout => ErrorCode::AuthTimeout.as_str(),
            AuthFailure::AuthUnavailable(_) => ErrorCode::AuthUnavailable.as_str(),
        }
    }

    /// The WebSocket close code (docs/PROTOCOL.md §3).
    pub fn close_code(&self) -> CloseCode {
        match self {
            AuthFailure::NoToken
            | AuthFailure::InvalidToken(_)
            | AuthFailure::TokenExpired
            | AuthFailure::TokenTooLarge { .. }
            | AuthFailure::ConflictingTokens => CloseCode::Unauthorized,
            AuthFailure::Forbidden(_) => CloseCode::Forbidden,
            AuthFailure::AuthTimeout => CloseCode::AuthTimeout,
            AuthFailure::AuthUnavailable(_) => CloseCode::TryAgainLater,
        }
    }

    /// The HTTP status when `auth.reject_at = "handshake"`.
    pub fn http_status(&self) -> StatusCode {
        match self.close_code() {
            CloseCode::Forbidden => StatusCode::FORBIDDEN,
            CloseCode::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            CloseCode::TryAgainLater => StatusCode::SERVICE_UNAVAILABLE,
            // 4401 and 4408 (the latter cannot happen before the upgrade).
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// Whether retrying the same request later can succeed (the `error` message's flag).
    pub fn retryable(&self) -> bool {
        matches!(self, AuthFailure::AuthUnavailable(_))
    }

    /// The full handshake rejection: status, `WWW-Authenticate` on 401 (docs/PROTOCOL.md §1),
    /// and the JSON body `{"error_code", "message"}`.
    pub fn handshake_response(&self) -> Response<String> {
        let body = json!({ "error_code": self.code(), "message": self.to_string() }).to_string();
        let mut response = Response::new(body);
        *response.status_mut() = self.http_status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.http_status() == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }

    /// The `error` message sent before closing when `auth.reject_at = "after_accept"`.
    pub fn error_message(&self) -> serde_json::Value {
        json!({
            "type": "error",
            "code": self.code(),
            "message": self.to_string(),
            "retryable": self.retryable(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_maps_to_code_close_code_and_status() {
        let cases = [
            (AuthFailure::NoToken, "NO_TOKEN", 4401, 401),
            (
                AuthFailure::InvalidToken(InvalidReason::BadSignature),
                "INVALID_TOKEN",
                4401,
                401,
            ),
            (AuthFailure::TokenExpired, "TOKEN_EXPIRED", 4401, 401),
            (
                AuthFailure::TokenTooLarge { len: 9, max: 8 },
                "TOKEN_TOO_LARGE",
                4401,
                401,
            ),
            (
                AuthFailure::ConflictingTokens,
                "CONFLICTING_TOKENS",
                4401,
                401,
            ),
            (AuthFailure::Forbidden("no"), "FORBIDDEN", 4403, 403),
            (AuthFailure::AuthTimeout, "AUTH_TIMEOUT", 4408, 401),
            (
                AuthFailure::AuthUnavailable("down"),
                "AUTH_UNAVAILABLE",
                1013,
                503,
            ),
        ];
        for (failure, code, close, status) in cases {
            assert_eq!(failure.code(), code);
            assert_eq!(failure.close_code().code(), close, "{code}");
            assert_eq!(failure.http_status().as_u16(), status, "{code}");
            assert_eq!(failure.retryable(), matches!(status, 429 | 503), "{code}");
        }
    }

    #[test]
    fn handshake_401_carries_bearer_challenge_and_json_body() {
        let response = AuthFailure::TokenExpired.handshake_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["error_code"], "TOKEN_EXPIRED");
        assert_eq!(body["message"], "the token has expired");
    }

    #[test]
    fn non_401_answers_have_no_challenge() {
        for failure in [
            AuthFailure::Forbidden("no"),
            AuthFailure::AuthUnavailable("down"),
        ] {
            let response = failure.handshake_response();
            assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
        }
    }

    #[test]
    fn error_message_has_protocol_shape() {
        let message = AuthFailure::AuthUnavailable("key set unreachable").error_message();
        assert_eq!(message["type"], "error");
        assert_eq!(message["code"], "AUTH_UNAVAILABLE");
        assert_eq!(message["retryable"], true);
    }
}
