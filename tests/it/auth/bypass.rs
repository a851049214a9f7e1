//! `match_bypass`: the secret compared exactly, the source network enforced, IPv4-mapped
//! peers handled, and nothing else letting a request through.

use std::net::IpAddr;

use http::HeaderMap;
use portcullis::auth::{AuthMethod, Identity, match_bypass};
use portcullis::config::BypassRule;

use super::*;

const HEADER: &str = "x-portcullis-bypass";
const BYPASS_SECRET: &str = "test-only-bypass-secret-0123456789";

fn rule(from: &[&str]) -> BypassRule {
    BypassRule {
        name: "loadtest".into(),
        header: HEADER.into(),
        secret: Secret::new(BYPASS_SECRET),
        user_id: "load-bot".into(),
        from: from.iter().map(|n| n.parse().unwrap()).collect(),
    }
}

fn with(name: &str, value: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.append(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value.parse().unwrap(),
    );
    map
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

#[test]
fn right_secret_matches_and_grants_the_rule_identity() {
    let rules = [rule(&[])];
    let matched = match_bypass(&rules, &with(HEADER, BYPASS_SECRET), None).unwrap();
    let identity = Identity::bypass(matched);
    assert_eq!(identity.user_id, "load-bot");
    assert_eq!(
        identity.method,
        AuthMethod::Bypass {
            rule: "loadtest".into()
        }
    );
    assert_eq!(identity.method.label(), "bypass:loadtest");
    assert_eq!(identity.expires_at, None);
}

#[test]
fn wrong_secret_or_wrong_length_does_not_match() {
    let rules = [rule(&[])];
    let mut flipped = BYPASS_SECRET.to_owned();
    flipped.replace_range(0..1, "T");
    let longer = format!("{BYPASS_SECRET}x");
    for value in [
        flipped.as_str(),
        &BYPASS_SECRET[..BYPASS_SECRET.len() - 1],
        longer.as_str(),
        "",
    ] {
        assert!(
            match_bypass(&rules, &with(HEADER, value), None).is_none(),
            "{value:?}"
        );
    }
}

#[test]
fn only_the_declared_header_counts() {
    let rules = [rule(&[])];
    assert!(match_bypass(&rules, &with("x-other", BYPASS_SECRET), None).is_none());
    assert!(match_bypass(&rules, &with("user-agent", BYPASS_SECRET), None).is_none());
    assert!(match_bypass(&rules, &HeaderMap::new(), None).is_none());
    let mut twice = with(HEADER, BYPASS_SECRET);
    twice.append(HEADER, "other".parse().unwrap());
    assert!(match_bypass(&rules, &twice, None).is_none());
}

#[test]
fn source_network_is_enforced() {
    let rules = [rule(&["10.0.0.0/8", "fd00::/8"])];
    let headers = with(HEADER, BYPASS_SECRET);
    assert!(match_bypass(&rules, &headers, ip("10.1.2.3")).is_some());
    assert!(match_bypass(&rules, &headers, ip("fd12::1")).is_some());
    assert!(match_bypass(&rules, &headers, ip("192.168.1.1")).is_none());
    assert!(match_bypass(&rules, &headers, ip("2001:db8::1")).is_none());
    // An unknown peer cannot be shown to be inside the network.
    assert!(match_bypass(&rules, &headers, None).is_none());
}

#[test]
fn ipv4_mapped_peers_are_checked_as_ipv4() {
    let rules = [rule(&["10.0.0.0/8"])];
    let headers = with(HEADER, BYPASS_SECRET);
    assert!(match_bypass(&rules, &headers, ip("::ffff:10.1.2.3")).is_some());
    assert!(match_bypass(&rules, &headers, ip("::ffff:192.168.1.1")).is_none());
}

#[test]
fn first_matching_rule_wins() {
    let mut second = rule(&[]);
    second.name = "second".into();
    let rules = [rule(&["10.0.0.0/8"]), second];
    let headers = with(HEADER, BYPASS_SECRET);
    assert_eq!(
        match_bypass(&rules, &headers, ip("10.0.0.1")).unwrap().name,
        "loadtest"
    );
    assert_eq!(
        match_bypass(&rules, &headers, ip("192.0.2.1"))
            .unwrap()
            .name,
        "second"
    );
}
