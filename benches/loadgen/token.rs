//! Minting one HS256 token per connection, as a real client would receive from its IdP.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

pub struct Minter {
    key: EncodingKey,
    header: Header,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Minter {
    pub fn new(secret: &str, issuer: Option<String>, audience: Option<String>) -> Minter {
        Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::new(Algorithm::HS256),
            issuer,
            audience,
        }
    }

    /// A fresh token for `sub`, valid for one hour from now.
    pub fn mint(&self, sub: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub,
            iat: now,
            exp: now + 3600,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        // Encoding a small struct with an HMAC key cannot fail; a failure is a bug here.
        encode(&self.header, &claims, &self.key).expect("HS256 encoding of fixed claims")
    }
}
