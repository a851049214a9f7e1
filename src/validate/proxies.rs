//! `server.trusted_proxies` rules: CIDR networks, not the whole internet, and a warning
//! where a bypass rule's `from` would only ever see the proxy's address.

use super::build::parse_net;
use super::ctx::Ctx;
use crate::keypath::kp;

/// Runs the proxy rules.
pub fn check(cx: &mut Ctx) {
    let server = &cx.raw.server;
    for (i, text) in server.trusted_proxies.iter().enumerate() {
        let at = kp("server.trusted_proxies").index(i);
        match parse_net(text) {
            None => cx.error(
                "E_TRUSTED_PROXY_CIDR",
                at,
                format!("`{text}` is not a CIDR network"),
                "write the proxies' networks, e.g. \"10.0.0.0/24\" or \"192.0.2.7/32\"",
            ),
            Some(net) if net.prefix_len() == 0 => cx.warn(
                "W_TRUSTED_PROXY_ANY",
                at,
                format!("`{text}` trusts every peer: any client can set its own address with X-Forwarded-For"),
                "list only the networks of your load balancers or reverse proxies",
            ),
            Some(_) => {}
        }
    }
    // TLS terminated in front (https public URL, no [server.tls]) means a proxy is the
    // peer; without trusted_proxies, bypass `from` networks see only its address.
    let proxied = server.public_url.starts_with("https://") && server.tls.is_none();
    if proxied && server.trusted_proxies.is_empty() {
        for (i, rule) in cx.raw.auth.bypass.iter().enumerate() {
            if !rule.from.is_empty() {
                cx.warn(
                    "W_BYPASS_BEHIND_PROXY",
                    kp(&format!("auth.bypass[{i}].from")),
                    format!("bypass rule `{}` checks the peer address, but TLS for {} ends in a proxy, whose address is the peer", rule.name, server.public_url),
                    "set server.trusted_proxies to the proxies' networks so the client's address (X-Forwarded-For) is used",
                );
            }
        }
    }
}
