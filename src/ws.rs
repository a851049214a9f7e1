//! The WebSocket endpoint. This skeleton declines upgrades with 503 until the socket
//! handler lands; plain GETs are answered 426 by the caller.

use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::app::App;
use crate::http::recover::error_reply;

/// The upgrade filter for a WebSocket path.
pub fn endpoint(_app: App) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::ws().map(|_ws: warp::ws::Ws| {
        error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            "the socket handler is not available in this build",
        )
    })
}
