//! The WebSocket endpoint built from `websocket.path` and its aliases: the handshake auth
//! chain of docs/PROTOCOL.md §1 ([`handshake`]), then one session per connection
//! ([`session`], one task per open connection) and its socket writer ([`writer`]).
//!
//! Architecture invariant: `ws/` never reads configuration files; it gets the validated
//! `Config` through [`App`].

mod frames;
pub mod handshake;
mod linger;
pub mod session;
pub mod upgrade;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use warp::Filter;
use warp::http::HeaderMap;
use warp::reply::Response;

use crate::app::App;
use handshake::Decision;
pub use session::SessionDeps;

/// The upgrade filter for a WebSocket path (the caller matched the path). A request that
/// is not a WebSocket upgrade is rejected here so the caller answers 426.
pub fn endpoint(
    app: App,
    deps: Arc<SessionDeps>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::get()
        .and(warp::header::headers_cloned())
        .and(query)
        .and(crate::proxy::client_addr(app.trusted_proxies()))
        .and(warp::ext::optional::<OnUpgrade>())
        .and_then(
            move |headers: HeaderMap,
                  query: String,
                  remote: Option<SocketAddr>,
                  on_upgrade: Option<OnUpgrade>| {
                let app = app.clone();
                let deps = Arc::clone(&deps);
                async move {
                    let (Some(key), Some(on_upgrade)) =
                        (upgrade::websocket_key(&headers), on_upgrade)
                    else {
                        return Err(warp::reject::not_found());
                    };
                    Ok(
                        match handshake::decide(&app, &headers, &query, remote).await {
                            Decision::Refuse(resp) => resp,
                            Decision::Accept(pre) => {
                                // Frames up to twice the limit are read so an oversize message can be
                                // answered with a proper 1009 close instead of a dropped connection.
                                let limit = app
                                    .config
                                    .websocket
                                    .max_message_bytes
                                    .saturating_mul(2)
                                    .max(4096);
                                let selected = pre.subprotocol.clone();
                                let token = app.sessions.token();
                                upgrade::accept(
                                    key,
                                    on_upgrade,
                                    upgrade::config(limit),
                                    selected.as_deref(),
                                    move |socket| async move {
                                        session::run(deps, socket, pre).await;
                                        drop(token);
                                    },
                                )
                            }
                        },
                    )
                }
            },
        )
}
