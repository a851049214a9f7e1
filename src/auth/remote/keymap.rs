//! One fetched key set, keyed by (issuer, `kid`): a key is found only under the issuer it
//! was fetched for, so a `kid` another issuer also uses can never select it (the mistake
//! of a cache keyed by `kid` alone).

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{DecodingKey, Header};

use crate::auth::failure::{AuthFailure, InvalidReason};
use crate::auth::jwk::JwksKey;
use crate::auth::keys;

/// The usable keys of one JWKS document.
pub(crate) struct KeyMap {
    issuer: Arc<str>,
    by_issuer: HashMap<Arc<str>, HashMap<String, JwksKey>>,
    unnamed: Vec<JwksKey>,
}

impl std::fmt::Debug for KeyMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMap")
            .field("issuer", &self.issuer)
            .field("keys", &self.len())
            .finish()
    }
}

impl KeyMap {
    /// Files `keys` under `issuer`. A later entry with a `kid` already seen replaces the
    /// earlier one (a JWKS must not repeat a `kid`; the newest wins, as in a rotation).
    pub fn new(issuer: Arc<str>, keys: Vec<JwksKey>) -> KeyMap {
        let mut named = HashMap::new();
        let mut unnamed = Vec::new();
        for key in keys {
            match key.kid.clone() {
                Some(kid) => {
                    named.insert(kid, key);
                }
                None => unnamed.push(key),
            }
        }
        KeyMap {
            by_issuer: HashMap::from([(Arc::clone(&issuer), named)]),
            issuer,
            unnamed,
        }
    }

    #[cfg(test)]
    pub fn empty_for_tests() -> KeyMap {
        KeyMap::new(Arc::from("test"), Vec::new())
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.by_issuer.values().map(HashMap::len).sum::<usize>() + self.unnamed.len()
    }

    /// Whether a token naming this `kid` has a key here.
    pub fn knows(&self, kid: &str) -> bool {
        self.named().is_some_and(|keys| keys.contains_key(kid))
    }

    fn named(&self) -> Option<&HashMap<String, JwksKey>> {
        self.by_issuer.get(&self.issuer)
    }

    /// The key for a token with this header, as [`keys::select`] picks it.
    pub fn select(&self, header: &Header) -> Result<&DecodingKey, AuthFailure> {
        let named = self.named();
        match &header.kid {
            Some(kid) => match named.and_then(|keys| keys.get(kid)) {
                Some(entry) => keys::select(std::iter::once(entry), 1, header),
                None => Err(AuthFailure::InvalidToken(InvalidReason::UnknownKey)),
            },
            None => {
                let all = named.into_iter().flat_map(HashMap::values);
                keys::select(all.chain(&self.unnamed), self.len(), header)
            }
        }
    }
}
