//! The client's address behind reverse proxies: `Forwarded` (RFC 7239) or, without it,
//! `X-Forwarded-For` is believed only when the peer is inside `server.trusted_proxies`,
//! and then only back to the first hop that is not itself a trusted proxy (read right to
//! left, so entries a client wrote itself at the left are never taken). Without trusted
//! proxies the headers are ignored. Bypass `from` rules and logs see the address this
//! module resolves.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use warp::Filter;
use warp::http::HeaderMap;

/// The TCP peer of a connection served by our own acceptor (`server/tls.rs`); warp's own
/// accept loop records it where `warp::addr::remote` finds it instead.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The client's address for this request (`None` when unknown).
pub fn client_addr(
    trusted: Arc<[IpNet]>,
) -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::addr::remote()
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::header::headers_cloned())
        .map(
            move |warp_peer: Option<SocketAddr>, ours: Option<PeerAddr>, headers: HeaderMap| {
                resolve(&trusted, warp_peer.or(ours.map(|p| p.0)), &headers)
            },
        )
}

/// The client address given the TCP peer and the request headers. A forwarded entry that
/// is not an address (`unknown`, an obfuscated name, garbage) makes the client unknown.
pub fn resolve(
    trusted: &[IpNet],
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<SocketAddr> {
    let peer = peer?;
    if !is_trusted(trusted, peer.ip()) {
        return Some(peer);
    }
    let chain = forwarded_chain(headers);
    let mut client = Some(peer);
    for entry in chain.iter().rev() {
        let hop = parse_node(entry)?;
        client = Some(hop);
        if !is_trusted(trusted, hop.ip()) {
            break;
        }
    }
    client
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let canonical = ip.to_canonical();
    trusted
        .iter()
        .any(|net| net.contains(&ip) || net.contains(&canonical))
}

/// The hops, leftmost (the original client) first: every `for=` of every `Forwarded`
/// element, or else every `X-Forwarded-For` entry.
fn forwarded_chain(headers: &HeaderMap) -> Vec<String> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
                    .map(|(_, value)| value.trim().trim_matches('"').to_owned())
                    // An element without `for=` says nothing about the client.
                    .unwrap_or_else(|| "unknown".to_owned())
            })
            .collect();
    }
    values("x-forwarded-for")
}

/// `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]:8080`.
fn parse_node(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                warp::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    fn ip(addr: Option<SocketAddr>) -> Option<String> {
        addr.map(|a| a.ip().to_string())
    }

    const PROXY: &str = "10.0.0.5:40000";

    #[test]
    fn headers_are_ignored_without_trusted_proxies_or_from_an_untrusted_peer() {
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            ip(resolve(&[], Some(PROXY.parse().unwrap()), &xff)),
            Some("10.0.0.5".into())
        );
        let trusted = nets(&["10.0.0.0/8"]);
        let outsider = "198.51.100.7:1234".parse().ok();
        assert_eq!(
            ip(resolve(&trusted, outsider, &xff)),
            Some("198.51.100.7".into())
        );
    }

    #[test]
    fn a_trusted_peer_names_the_first_untrusted_hop_from_the_right() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = PROXY.parse().ok();
        // The client forged 127.0.0.1 at the left; the proxies appended the real address.
        let xff = headers(&[("x-forwarded-for", "127.0.0.1, 203.0.113.9, 10.0.0.7")]);
        assert_eq!(
            ip(resolve(&trusted, peer, &xff)),
            Some("203.0.113.9".into())
        );
        let split = headers(&[
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            ip(resolve(&trusted, peer, &split)),
            Some("203.0.113.9".into())
        );
        let inside = headers(&[("x-forwarded-for", "10.1.2.3")]);
        assert_eq!(
            ip(resolve(&trusted, peer, &inside)),
            Some("10.1.2.3".into())
        );
        assert_eq!(
            ip(resolve(&trusted, peer, &HeaderMap::new())),
            Some("10.0.0.5".into())
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_its_forms_parse() {
        let trusted = nets(&["10.0.0.0/8", "::ffff:10.0.0.0/104"]);
        let peer = PROXY.parse().ok();
        let both = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\"",
            ),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(
            ip(resolve(&trusted, peer, &both)),
            Some("2001:db8:cafe::17".into())
        );
        let mapped_peer = "[::ffff:10.0.0.5]:1".parse().ok();
        let v4 = headers(&[("forwarded", "For=192.0.2.60:80")]);
        assert_eq!(
            ip(resolve(&trusted, mapped_peer, &v4)),
            Some("192.0.2.60".into())
        );
    }

    #[test]
    fn an_unreadable_hop_makes_the_client_unknown() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = PROXY.parse().ok();
        for value in [
            "unknown",
            "_hidden",
            "not an address",
            "203.0.113.9, garbage",
        ] {
            let h = headers(&[("x-forwarded-for", value)]);
            assert_eq!(resolve(&trusted, peer, &h), None, "{value}");
        }
        let no_for = headers(&[("forwarded", "proto=https")]);
        assert_eq!(resolve(&trusted, peer, &no_for), None);
    }
}
