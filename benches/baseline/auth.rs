//! Authentication of the upgrade request: the token offered as the subprotocol
//! `jwt.<token>` (compact JWT, or its base64url encoding as older clients send), verified
//! with HS256, and the subprotocol the response selects.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::server::Request;

pub const PROTOCOL: &str = "portcullis.v1";

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
}

/// The verified caller.
#[derive(Debug)]
pub struct Identity {
    pub user_id: String,
    pub expires_at: i64,
}

/// Why a connection is refused; each maps to an `error` code and close 4401.
#[derive(Debug, Clone, Copy)]
pub enum AuthError {
    NoToken,
    Invalid,
    Expired,
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            AuthError::NoToken => "NO_TOKEN",
            AuthError::Invalid => "INVALID_TOKEN",
            AuthError::Expired => "TOKEN_EXPIRED",
        }
    }
}

pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn new(secret: &str, issuer: Option<&str>, audience: Option<&str>) -> Verifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        match issuer {
            Some(i) => validation.set_issuer(&[i]),
            None => validation.iss = None,
        }
        match audience {
            Some(a) => validation.set_audience(&[a]),
            None => validation.validate_aud = false,
        }
        Verifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        // Older clients base64url-encode the compact JWT, which has dots; the encoding has none.
        let decoded;
        let compact = if token.contains('.') {
            token
        } else {
            let bytes = URL_SAFE_NO_PAD
                .decode(token)
                .map_err(|_| AuthError::Invalid)?;
            decoded = String::from_utf8(bytes).map_err(|_| AuthError::Invalid)?;
            decoded.as_str()
        };
        match decode::<Claims>(compact, &self.key, &self.validation) {
            Ok(data) => Ok(Identity {
                user_id: data.claims.sub,
                expires_at: data.claims.exp,
            }),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(AuthError::Expired),
            Err(_) => Err(AuthError::Invalid),
        }
    }

    /// Authenticates the upgrade request. Returns the outcome and the subprotocol entry to
    /// select: `portcullis.v1` when offered, else the `jwt.` entry itself so that browsers
    /// do not fail the handshake (PROTOCOL.md §1).
    pub fn check(&self, req: &Request) -> (Result<Identity, AuthError>, Option<String>) {
        let offered: Vec<&str> = req
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let jwt_entry = offered.iter().find(|p| p.starts_with("jwt."));
        let selected = if offered.contains(&PROTOCOL) {
            Some(PROTOCOL.to_owned())
        } else {
            jwt_entry.map(|p| (*p).to_owned())
        };
        let outcome = match jwt_entry {
            Some(p) => self.verify(&p["jwt.".len()..]),
            None => Err(AuthError::NoToken),
        };
        (outcome, selected)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "test-secret-test-secret-test-secret";

    fn token(sub: &str, exp_in: i64) -> String {
        let exp = chrono::Utc::now().timestamp() + exp_in;
        let claims = json!({"sub": sub, "exp": exp});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn request(protocols: &str) -> Request {
        http::Request::builder()
            .header("sec-websocket-protocol", protocols)
            .body(())
            .unwrap()
    }

    fn check(protocols: &str) -> (Result<String, &'static str>, Option<String>) {
        let (r, sel) = Verifier::new(SECRET, None, None).check(&request(protocols));
        (r.map(|i| i.user_id).map_err(|e| e.code()), sel)
    }

    #[test]
    fn selects_portcullis_v1_and_never_the_token() {
        let t = token("alice", 60);
        let (r, sel) = check(&format!("portcullis.v1, jwt.{t}"));
        assert_eq!((r, sel.as_deref()), (Ok("alice".into()), Some(PROTOCOL)));
    }

    #[test]
    fn accepts_the_base64url_form_and_a_lone_jwt_entry() {
        let t = URL_SAFE_NO_PAD.encode(token("bob", 60));
        let (r, sel) = check(&format!("jwt.{t}"));
        assert_eq!(r, Ok("bob".into()));
        assert_eq!(sel, Some(format!("jwt.{t}")));
    }

    #[test]
    fn refuses_missing_expired_and_forged_tokens() {
        assert_eq!(check("portcullis.v1").0, Err("NO_TOKEN"));
        assert_eq!(
            check(&format!("portcullis.v1, jwt.{}", token("c", -60))).0,
            Err("TOKEN_EXPIRED")
        );
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "m", "exp": 9_999_999_999i64}),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert_eq!(
            check(&format!("portcullis.v1, jwt.{forged}")).0,
            Err("INVALID_TOKEN")
        );
    }
}
