//! The WebSocket endpoint built from `websocket.path` and its aliases: the handshake auth
//! chain of PROTOCOL.md §1 ([`handshake`]), then one session per connection
//! ([`session`]) with its writer ([`writer`]).
//!
//! Architecture invariant: `ws/` never reads configuration files; it gets the validated
//! `Config` through [`App`].

pub mod handshake;
pub mod protocol;
pub mod session;
pub mod writer;

use std::net::SocketAddr;

use warp::Filter;
use warp::http::{HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::ws::Ws;

use crate::app::App;
use handshake::Decision;

/// The upgrade filter for a WebSocket path (the caller matched the path).
pub fn endpoint(app: App) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::ws()
        .and(warp::header::headers_cloned())
        .and(query)
        .and(warp::addr::remote())
        .map(
            move |ws: Ws, headers: HeaderMap, query: String, remote: Option<SocketAddr>| {
                let app = app.clone();
                match handshake::decide(&app, &headers, &query, remote) {
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
                        let ws = ws.max_message_size(limit).max_frame_size(limit);
                        let token = app.sessions.token();
                        let reply = ws.on_upgrade(move |socket| async move {
                            session::run(app, socket, pre).await;
                            drop(token);
                        });
                        let mut resp = warp::Reply::into_response(reply);
                        if let Some(p) = selected.and_then(|p| HeaderValue::from_str(&p).ok()) {
                            resp.headers_mut().insert("sec-websocket-protocol", p);
                        }
                        resp
                    }
                }
            },
        )
}
