//! The JSON answer of an HTTP refusal, `{"error_code": …, "message": …}` with its status.
//! The HTTP routes' `recover` and the WebSocket handshake both answer with it; it lives
//! below both so that `ws` does not import `http` (`http` assembles the `ws` endpoints).

use warp::Reply;
use warp::http::StatusCode;

/// A JSON error reply.
pub fn error_reply(status: StatusCode, code: &str, message: &str) -> warp::reply::Response {
    let body = serde_json::json!({ "error_code": code, "message": message });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}
