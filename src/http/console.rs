//! The development console: one small page that gets a dev token, connects with the
//! subprotocol (browsers cannot set headers on a WebSocket) and shows the event stream.
//! Route paths come from the configuration, so the page works whatever paths an
//! environment declares.

use warp::Reply;
use warp::reply::Response;

use crate::app::App;
use crate::config::Handler;

const PAGE: &str = include_str!("console.html");

fn route_path(app: &App, h: Handler) -> String {
    app.config
        .routes
        .iter()
        .find(|r| r.handler == h)
        .map(|r| r.path.clone())
        .unwrap_or_default()
}

/// The page, with this environment's paths filled in.
pub fn page(app: &App) -> Response {
    let settings = serde_json::json!({
        "environment": app.config.name,
        "websocketPath": app.config.websocket.path,
        "devTokenPath": route_path(app, Handler::DevToken),
        "threadsPath": route_path(app, Handler::Threads),
        "threadMessagesPath": route_path(app, Handler::ThreadMessages),
        "protocol": crate::wire::PROTOCOL,
    });
    // `</` cannot appear inside the JSON (paths are validated), so it is safe in a script.
    let html = PAGE.replace("__PORTCULLIS_SETTINGS__", &settings.to_string());
    let mut resp = warp::reply::html(html).into_response();
    resp.headers_mut().insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-store"),
    );
    resp
}
