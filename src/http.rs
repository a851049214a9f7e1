//! HTTP beside the socket: warp filters assembled from `[[routes]]` and the WebSocket
//! path(s) of a validated [`Config`](crate::config::Config), with one `recover` turning
//! every rejection into a JSON error.

pub mod console;
pub mod handlers;
pub mod path_match;
pub mod recover;
pub mod table;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::app::App;
use crate::config::{HttpMethod, Route};
use crate::wire::ErrorCode;
use path_match::PathPattern;
use recover::ApiError;

/// Largest request body a handler reads (dev token requests are tiny).
const MAX_BODY: u64 = 16 * 1024;

/// What a handler gets from the request.
pub struct Request {
    /// Path parameters.
    pub params: BTreeMap<String, String>,
    /// Raw query string.
    pub query: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (empty for GET).
    pub body: Bytes,
    /// Peer address.
    pub remote: Option<SocketAddr>,
}

fn to_method(m: HttpMethod) -> Method {
    match m {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
    }
}

/// Matches one configured path (any method), extracting its parameters.
fn path_of(
    pattern: PathPattern,
) -> impl Filter<Extract = (BTreeMap<String, String>,), Error = warp::Rejection> + Clone {
    warp::path::full().and_then(move |full: FullPath| {
        let found = pattern.matches(full.as_str());
        async move { found.ok_or_else(warp::reject::not_found) }
    })
}

/// The filter for one `[[routes]]` entry.
fn route(app: App, r: &Route) -> BoxedFilter<(Response,)> {
    let method = to_method(r.method);
    let handler = r.handler;
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    path_of(PathPattern::new(&r.path))
        .and(
            warp::method()
                .and_then(move |m: Method| {
                    let ok = m == method || (method == Method::GET && m == Method::HEAD);
                    let want = method.clone();
                    async move {
                        if ok {
                            Ok(())
                        } else {
                            Err(warp::reject::custom(ApiError::new(
                                StatusCode::METHOD_NOT_ALLOWED,
                                ErrorCode::MethodNotAllowed.as_str(),
                                format!("use {want}"),
                            )))
                        }
                    }
                })
                .untuple_one(),
        )
        .and(query)
        .and(warp::header::headers_cloned())
        .and(
            warp::body::content_length_limit(MAX_BODY)
                .and(warp::body::bytes())
                .or(warp::any().map(Bytes::new))
                .unify(),
        )
        .and(crate::proxy::client_addr(app.trusted_proxies()))
        .and_then(move |params, query, headers, body, remote| {
            let app = app.clone();
            async move {
                let req = Request {
                    params,
                    query,
                    headers,
                    body,
                    remote,
                };
                let started = std::time::Instant::now();
                let result = handlers::handle(&app, handler, req).await;
                let status = match &result {
                    Ok(response) => response.status(),
                    Err(e) => e.status,
                };
                app.metrics
                    .http_request(handler.name(), status.as_u16(), started.elapsed());
                result.map_err(warp::reject::custom)
            }
        })
        .boxed()
}

/// A plain GET on a WebSocket path, or an upgrade this server cannot take (a
/// `Sec-WebSocket-Version` other than 13, a missing key): 426 with a JSON hint, never 200,
/// and `Sec-WebSocket-Version: 13` naming the version it speaks (RFC 6455 §4.4).
fn upgrade_required(
    path: String,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::get()
        .and(warp::header::headers_cloned())
        .map(move |headers: warp::http::HeaderMap| {
            let version = headers
                .get("sec-websocket-version")
                .and_then(|v| v.to_str().ok());
            let message = match version {
                Some(v) if v != "13" => format!(
                    "{path} speaks WebSocket version 13, not {v}: upgrade with Sec-WebSocket-Version: 13, subprotocol portcullis.v1"
                ),
                _ => format!(
                    "{path} is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket), subprotocol portcullis.v1"
                ),
            };
            if headers.contains_key("upgrade") {
                // An attempted upgrade refused: operators see why (never a header value
                // beyond the version, which is no secret).
                tracing::info!(reason = ErrorCode::UpgradeRequired.as_str(), path = %path, version = version.unwrap_or("-"), "refused a WebSocket upgrade");
            }
            let body = serde_json::json!({
                "error_code": ErrorCode::UpgradeRequired.as_str(),
                "message": message,
                "path": path,
                "protocol": crate::wire::PROTOCOL,
            });
            let mut resp = warp::reply::with_status(warp::reply::json(&body), StatusCode::UPGRADE_REQUIRED).into_response();
            let h = resp.headers_mut();
            h.insert("upgrade", warp::http::HeaderValue::from_static("websocket"));
            h.insert("sec-websocket-version", warp::http::HeaderValue::from_static("13"));
            resp
        })
}

/// Every WebSocket path: an upgrade goes to the socket handler, anything else gets 426.
fn websocket_paths(app: &App) -> Option<BoxedFilter<(Response,)>> {
    let mut combined: Option<BoxedFilter<(Response,)>> = None;
    // Once for every path: each connection holds a pointer to it.
    let sessions = crate::ws::SessionDeps::new(app);
    for p in app.config.websocket_paths() {
        let here = path_of(PathPattern::new(p)).map(|_| ()).untuple_one();
        let f = here
            .and(
                crate::ws::endpoint(app.clone(), Arc::clone(&sessions))
                    .or(upgrade_required(p.to_string()))
                    .unify(),
            )
            .boxed();
        combined = Some(match combined {
            Some(c) => c.or(f).unify().boxed(),
            None => f,
        });
    }
    combined
}

/// All filters of an environment: WebSocket paths, then literal routes, then
/// parameterised ones, then JSON errors for anything else.
pub fn filters(app: App) -> BoxedFilter<(Response,)> {
    let mut routes: Vec<&Route> = app.config.routes.iter().collect();
    routes.sort_by_key(|r| !PathPattern::new(&r.path).is_literal());
    let mut combined: BoxedFilter<(Response,)> = match websocket_paths(&app) {
        Some(ws) => ws,
        None => warp::any()
            .and_then(|| async { Err::<Response, _>(warp::reject::not_found()) })
            .boxed(),
    };
    for r in routes {
        combined = combined.or(route(app.clone(), r)).unify().boxed();
    }
    combined.recover(recover::recover).unify().boxed()
}
