//! Declared bypass rules (`[[auth.bypass]]`): the only way around token auth. A rule
//! matches when its header carries its secret and the peer is inside one of its networks.
//! Nothing else (environment variables, user agents, other headers) ever bypasses.

use std::net::IpAddr;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::BypassRule;

/// The first rule (in declaration order) the request satisfies, if any.
///
/// Every rule's secret is compared, matched or not, so the time taken does not say which
/// rule came close.
pub fn match_bypass<'a>(
    rules: &'a [BypassRule],
    headers: &HeaderMap,
    remote: Option<IpAddr>,
) -> Option<&'a BypassRule> {
    let mut matched = None;
    for rule in rules {
        let secret_ok = secret_matches(rule, headers);
        if secret_ok && matched.is_none() && source_allowed(rule, remote) {
            matched = Some(rule);
        }
    }
    matched
}

/// Exactly one header value, equal to the secret. Both sides are hashed first so the
/// comparison runs over 32 bytes whatever the lengths, and `ct_eq` does not stop early.
fn secret_matches(rule: &BypassRule, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(rule.header.as_str()).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let presented: [u8; 32] = Sha256::digest(value.as_bytes()).into();
    let expected: [u8; 32] = Sha256::digest(rule.secret.expose().as_bytes()).into();
    presented[..].ct_eq(&expected[..]).into()
}

/// An empty `from` allows any peer; otherwise the peer must be known and inside a network.
/// An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, as dual-stack listeners report IPv4
/// clients) is also checked as the IPv4 address it is.
fn source_allowed(rule: &BypassRule, remote: Option<IpAddr>) -> bool {
    if rule.from.is_empty() {
        return true;
    }
    let Some(remote) = remote else {
        return false;
    };
    let canonical = remote.to_canonical();
    rule.from
        .iter()
        .any(|net| net.contains(&remote) || net.contains(&canonical))
}
