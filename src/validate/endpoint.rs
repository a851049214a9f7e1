//! Listener, WebSocket and client rules: addresses parse, heartbeats beat the proxy's idle
//! timeout, origins are pinned outside development, and `client.websocket_url` dials a
//! declared WebSocket path (the `/ws` vs `/websocket` failure).

use super::ctx::Ctx;
use super::schema_walk::closest;
use crate::keypath::kp;

/// Splits `scheme://host[:port]/path?query` into (scheme, authority, path).
pub fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Some((scheme, authority, path))
}

/// Runs the endpoint rules.
pub fn check(cx: &mut Ctx) {
    listener(cx);
    heartbeat(cx);
    let seen = websocket_paths(cx);
    origins(cx);
    client_url(cx, &seen);
}

/// `E_LISTEN_ADDR` / `E_PUBLIC_URL_INSECURE`: refuses a listen address that does not parse
/// (the bind would fail at startup) and a plain-http public URL in production.
fn listener(cx: &mut Ctx) {
    let raw = cx.raw;
    if raw.server.listen.parse::<std::net::SocketAddr>().is_err() {
        cx.error(
            "E_LISTEN_ADDR",
            kp("server.listen"),
            format!("`{}` is not a socket address", raw.server.listen),
            "write IP:PORT, e.g. \"0.0.0.0:8080\" or \"127.0.0.1:8080\"",
        );
    }
    if cx.production() && raw.server.public_url.starts_with("http://") {
        cx.error(
            "E_PUBLIC_URL_INSECURE",
            kp("server.public_url"),
            "production is served over plain http",
            "use the https:// URL users reach",
        );
    }
}

/// `E_HEARTBEAT_TIMEOUT` / `W_PONG_TIMEOUT`: refuses a heartbeat no shorter than the
/// proxy's idle timeout (the proxy would cut idle sockets) and warns when dead peers
/// would linger for more than two heartbeats.
fn heartbeat(cx: &mut Ctx) {
    let raw = cx.raw;
    let ws = &raw.websocket;
    if ws.heartbeat_ms >= raw.server.proxy_idle_timeout_ms {
        cx.error(
            "E_HEARTBEAT_TIMEOUT",
            kp("websocket.heartbeat_ms"),
            format!("heartbeat every {} ms is not shorter than the proxy idle timeout of {} ms: idle sockets will be cut by the proxy", ws.heartbeat_ms, raw.server.proxy_idle_timeout_ms),
            format!("set websocket.heartbeat_ms below {} (e.g. {})", raw.server.proxy_idle_timeout_ms, raw.server.proxy_idle_timeout_ms * 2 / 5),
        );
    }
    if ws.pong_timeout_ms > ws.heartbeat_ms * 2 {
        cx.warn(
            "W_PONG_TIMEOUT",
            kp("websocket.pong_timeout_ms"),
            "pong timeout is more than two heartbeats: dead peers linger",
            "keep pong_timeout_ms at or below 2 × heartbeat_ms",
        );
    }
}

/// `E_WS_PATH_DUPLICATE`: refuses an alias declared twice (or equal to the main path);
/// returns every declared WebSocket path, duplicates included, for the client-URL rule.
fn websocket_paths<'a>(cx: &mut Ctx<'a>) -> Vec<&'a str> {
    let ws = &cx.raw.websocket;
    let mut seen: Vec<&str> = vec![ws.path.as_str()];
    for (i, a) in ws.aliases.iter().enumerate() {
        if seen.contains(&a.as_str()) {
            cx.error(
                "E_WS_PATH_DUPLICATE",
                kp(&format!("websocket.aliases[{i}]")),
                format!("WebSocket path `{a}` is declared twice"),
                "remove the duplicate alias",
            );
        }
        seen.push(a);
    }
    seen
}

/// `E_ORIGINS_ANY` / `W_ORIGINS_ANY` / `E_ORIGIN_FORMAT`: refuses origins that let any web
/// page open a socket with the user's cookies outside development, and origins written
/// in a form browsers never send (which would match nothing).
fn origins(cx: &mut Ctx) {
    let ws = &cx.raw.websocket;
    for (i, o) in ws.allowed_origins.iter().enumerate() {
        let at = kp(&format!("websocket.allowed_origins[{i}]"));
        if o == "*" {
            if cx.relaxed() {
                cx.warn(
                    "W_ORIGINS_ANY",
                    at,
                    "`*` lets any web page open a socket with the user's cookies",
                    "list the exact origins of your frontends",
                );
            } else {
                cx.error(
                    "E_ORIGINS_ANY",
                    at,
                    format!(
                        "`*` in allowed_origins lets any web page open sockets in {}",
                        cx.kind.as_str()
                    ),
                    "list the exact origins, e.g. \"https://chat.example.com\"",
                );
            }
        } else if split_url(o).is_none_or(|(s, h, p)| {
            !matches!(s, "http" | "https") || h.is_empty() || p != "/" || o.ends_with('/')
        }) {
            cx.error("E_ORIGIN_FORMAT", at, format!("origin `{o}` is not scheme://host[:port]"), "write origins exactly as browsers send them, e.g. \"https://chat.example.com\" (no path, no trailing slash)");
        }
    }
    if ws.allowed_origins.is_empty() {
        if cx.production() {
            cx.error(
                "E_ORIGINS_ANY",
                kp("websocket"),
                "production accepts sockets from any Origin (allowed_origins is empty)",
                "set websocket.allowed_origins to your frontends' origins",
            );
        } else if !cx.relaxed() {
            cx.warn(
                "W_ORIGINS_ANY",
                kp("websocket"),
                "any Origin may open a socket (allowed_origins is empty)",
                "set websocket.allowed_origins to your frontends' origins",
            );
        }
    }
}

/// `E_CLIENT_WS_URL` / `E_CLIENT_WS_INSECURE` / `W_CLIENT_HOST`: refuses a client URL that
/// does not parse or dials a path that is not a WebSocket path here (the `/ws` vs
/// `/websocket` failure), plain `ws://` outside development, and warns on a host that
/// differs from `server.public_url`.
fn client_url(cx: &mut Ctx, seen: &[&str]) {
    let raw = cx.raw;
    let url = &raw.client.websocket_url;
    match split_url(url) {
        None => cx.error(
            "E_CLIENT_WS_URL",
            kp("client.websocket_url"),
            format!("`{url}` is not a URL"),
            "write wss://host/path",
        ),
        Some((scheme, host, path)) => {
            if !seen.contains(&path) {
                let guess = closest(path, seen.iter().copied())
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                let hint = format!(
                    "{guess}use a declared WebSocket path ({}) or add `{path}` to websocket.aliases",
                    seen.join(", ")
                );
                cx.error(
                    "E_CLIENT_WS_URL",
                    kp("client.websocket_url"),
                    format!("clients dial `{path}`, which is not a WebSocket path of this server"),
                    hint,
                );
            }
            if scheme == "ws" && !cx.relaxed() {
                cx.error(
                    "E_CLIENT_WS_INSECURE",
                    kp("client.websocket_url"),
                    format!(
                        "clients in {} would connect over plain ws://",
                        cx.kind.as_str()
                    ),
                    "use wss://",
                );
            }
            if let Some((_, public_host, _)) = split_url(&raw.server.public_url)
                && public_host != host
            {
                cx.warn(
                    "W_CLIENT_HOST",
                    kp("client.websocket_url"),
                    format!("clients dial host `{host}` but server.public_url is `{public_host}`"),
                    "make sure the proxy routes that host here, or use the same host",
                );
            }
        }
    }
}
