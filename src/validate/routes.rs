//! Route rules: handlers exist and fit the environment, no two routes answer the same
//! request, no WebSocket path is also an HTTP route, and the client URL dials a real
//! WebSocket path.

use super::ctx::Ctx;
use super::schema_walk::closest;
use crate::config::raw::{HttpMethod, RouteSection};
use crate::config::validated::Handler;
use crate::keypath::{KeyPath, kp};

/// A path split into literal and `{param}` segments.
pub fn segments(path: &str) -> Vec<Option<&str>> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                None
            } else {
                Some(s)
            }
        })
        .collect()
}

fn params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// Two paths match the same requests when they have the same length and every position
/// is equal literals or a parameter on either side.
fn overlap(a: &str, b: &str) -> bool {
    let (sa, sb) = (segments(a), segments(b));
    sa.len() == sb.len()
        && sa
            .iter()
            .zip(&sb)
            .all(|(x, y)| x.is_none() || y.is_none() || x == y)
}

/// Runs the route rules, per route in declaration order, then the probe-route check.
pub fn check(cx: &mut Ctx) {
    let raw = cx.raw;
    let routes = &raw.routes;
    let ws_paths: Vec<&str> = std::iter::once(raw.websocket.path.as_str())
        .chain(raw.websocket.aliases.iter().map(String::as_str))
        .collect();
    for (i, r) in routes.iter().enumerate() {
        let at = kp(&format!("routes[{i}]"));
        malformed_path(cx, r, &at);
        match Handler::from_name(&r.handler) {
            None => unknown_handler(cx, r, &at),
            Some(h) => {
                dev_handler_allowed(cx, h, &at);
                method_answered(cx, r, h, &at);
                params_match(cx, r, h, &at);
            }
        }
        duplicate_routes(cx, routes, i, &at);
        websocket_conflicts(cx, r, &ws_paths, &at);
    }
    probe_routes(cx, routes);
}

/// `E_ROUTE_PATH`: refuses a `{` or `}` that is not a whole `{param}` segment, which the
/// router would match as a literal.
fn malformed_path(cx: &mut Ctx, r: &RouteSection, at: &KeyPath) {
    let path = r.path.as_str();
    if path.matches('{').count() != path.matches('}').count()
        || path.split('/').any(|s| {
            (s.contains('{') || s.contains('}'))
                && !(s.starts_with('{') && s.ends_with('}') && s.len() > 2)
        })
    {
        cx.error(
            "E_ROUTE_PATH",
            at.key("path"),
            format!("route path `{path}` has a malformed parameter"),
            "write parameters as whole segments, e.g. `/api/threads/{thread_id}`".to_string(),
        );
    }
}

/// `E_UNKNOWN_HANDLER`: refuses a handler name the gateway does not have.
fn unknown_handler(cx: &mut Ctx, r: &RouteSection, at: &KeyPath) {
    let names: Vec<&str> = Handler::ALL.iter().map(|(n, _)| *n).collect();
    let hint = match closest(&r.handler, names.iter().copied()) {
        Some(c) => format!("did you mean `{c}`? (handlers: {})", names.join(", ")),
        None => format!("use one of: {}", names.join(", ")),
    };
    cx.error(
        "E_UNKNOWN_HANDLER",
        at.key("handler"),
        format!(
            "route {} {} names unknown handler `{}`",
            r.method.as_str(),
            r.path,
            r.handler
        ),
        hint,
    );
}

/// `E_HANDLER_NOT_ALLOWED`: refuses dev-token handlers outside development and test, since
/// they mint or accept tokens without a real identity provider.
fn dev_handler_allowed(cx: &mut Ctx, h: Handler, at: &KeyPath) {
    if matches!(h, Handler::DevToken | Handler::Console) && !cx.relaxed() {
        cx.error(
            "E_HANDLER_NOT_ALLOWED",
            at.key("handler"),
            format!(
                "handler `{}` mints or uses dev tokens and is not allowed in {}",
                h.name(),
                cx.kind.as_str()
            ),
            "remove this route; dev tokens exist only in development and test".to_string(),
        );
    }
}

/// `E_ROUTE_METHOD`: refuses a method the handler does not answer (only `dev_token` takes
/// POST), which would make the route unreachable.
fn method_answered(cx: &mut Ctx, r: &RouteSection, h: Handler, at: &KeyPath) {
    let ok_method = match h {
        Handler::DevToken => matches!(r.method, HttpMethod::Get | HttpMethod::Post),
        _ => r.method == HttpMethod::Get,
    };
    if !ok_method {
        cx.error(
            "E_ROUTE_METHOD",
            at.key("method"),
            format!(
                "handler `{}` does not answer {}",
                h.name(),
                r.method.as_str()
            ),
            "use method = \"GET\"".to_string(),
        );
    }
}

/// `E_ROUTE_PARAMS`: refuses a path whose `{param}` segments differ from those the handler
/// reads, so no handler is left without its parameter.
fn params_match(cx: &mut Ctx, r: &RouteSection, h: Handler, at: &KeyPath) {
    let path = r.path.as_str();
    let ps = params(path);
    let want: &[&str] = if h == Handler::ThreadMessages {
        &["thread_id"]
    } else {
        &[]
    };
    if ps != want {
        let hint = if want.is_empty() {
            "remove the `{…}` segments from this path".to_string()
        } else {
            "use a path with exactly one `{thread_id}` segment, e.g. `/api/threads/{thread_id}/messages`".to_string()
        };
        cx.error(
            "E_ROUTE_PARAMS",
            at.key("path"),
            format!(
                "handler `{}` takes parameters {want:?} but path `{path}` declares {ps:?}",
                h.name()
            ),
            hint,
        );
    }
}

/// `E_ROUTE_CONFLICT` / `E_ROUTE_AMBIGUOUS` / `W_ROUTE_OVERLAP`: refuses two routes that
/// answer the same request (only one could ever run), and warns where a literal path
/// shadows a parameter path.
fn duplicate_routes(cx: &mut Ctx, routes: &[RouteSection], i: usize, at: &KeyPath) {
    let r = &routes[i];
    let path = r.path.as_str();
    for (j, other) in routes.iter().enumerate().take(i) {
        if other.method != r.method {
            continue;
        }
        if other.path == r.path {
            cx.error(
                "E_ROUTE_CONFLICT",
                at.key("path"),
                format!(
                    "{} {path} is declared twice (also routes[{j}], handler `{}`)",
                    r.method.as_str(),
                    other.handler
                ),
                "remove one of the two routes or give it another path".to_string(),
            );
        } else if overlap(&other.path, path) {
            let both_params = segments(&other.path)
                .iter()
                .zip(segments(path))
                .all(|(a, b)| a.is_none() == b.is_none());
            if both_params {
                cx.error(
                    "E_ROUTE_AMBIGUOUS",
                    at.key("path"),
                    format!(
                        "{} {path} matches the same requests as routes[{j}] `{}`",
                        r.method.as_str(),
                        other.path
                    ),
                    "make the paths differ in a literal segment".to_string(),
                );
            } else {
                cx.warn(
                    "W_ROUTE_OVERLAP",
                    at.key("path"),
                    format!(
                        "{} {path} overlaps routes[{j}] `{}`; the literal path wins",
                        r.method.as_str(),
                        other.path
                    ),
                    "rename one if both are meant to be reachable".to_string(),
                );
            }
        }
    }
}

/// `E_WS_ROUTE_CONFLICT`: refuses an HTTP route on a WebSocket path, where clients would
/// get an HTTP answer instead of an upgrade.
fn websocket_conflicts(cx: &mut Ctx, r: &RouteSection, ws_paths: &[&str], at: &KeyPath) {
    let path = r.path.as_str();
    for ws in ws_paths {
        if overlap(path, ws) {
            cx.error("E_WS_ROUTE_CONFLICT", at.key("path"), format!("{} {path} is also the WebSocket path `{ws}`: clients would get an HTTP answer instead of an upgrade", r.method.as_str()), "remove this route; the WebSocket path is served by `websocket.path` / `websocket.aliases` (a plain GET there answers 426)".to_string());
        }
    }
}

/// `W_NO_PROBE_ROUTE`: warns when no route serves `health` or `ready`, which load
/// balancers need to probe the gateway.
fn probe_routes(cx: &mut Ctx, routes: &[RouteSection]) {
    for h in [Handler::Health, Handler::Ready] {
        if !routes.iter().any(|r| r.handler == h.name()) {
            cx.warn("W_NO_PROBE_ROUTE", kp("routes"), format!("no route uses the `{}` handler", h.name()), format!("add [[routes]] method = \"GET\", path = \"/{}\", handler = \"{}\" so load balancers can probe", h.name(), h.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_segments() {
        assert!(overlap("/a/{x}", "/a/{y}"));
        assert!(overlap("/a/b", "/a/{y}"));
        assert!(!overlap("/a/b", "/a/c"));
        assert!(!overlap("/a", "/a/b"));
        assert_eq!(segments("/a/{x}/"), vec![Some("a"), None]);
    }
}
