//! The built-in HTTP handlers named in `[[routes]]`.

use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::Request;
use super::recover::ApiError;
use crate::app::App;
use crate::config::{Handler, TokenSource};

/// Dispatches a request to its handler.
pub async fn handle(app: &App, handler: Handler, req: Request) -> Result<Response, ApiError> {
    match handler {
        Handler::Health => {
            Ok(warp::reply::json(&serde_json::json!({ "status": "ok" })).into_response())
        }
        Handler::Ready => Ok(ready(app).await),
        Handler::ClientConfig => Ok(client_config(app)),
        other => {
            let _ = req;
            Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED",
                format!("handler `{}` is not available in this build", other.name()),
            ))
        }
    }
}

async fn ready(app: &App) -> Response {
    let deps = crate::probe::probe_all(&app.config, app.store.get()).await;
    let draining = app.is_draining();
    let ok = !draining && deps.iter().all(|d| d.ok || !d.required);
    let body = serde_json::json!({
        "status": if ok { "ready" } else if draining { "draining" } else { "not_ready" },
        "dependencies": deps,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// What a frontend needs, derived from the configuration so no frontend keeps a copy.
pub fn client_config_value(app: &App) -> serde_json::Value {
    let c = &app.config;
    let base = c
        .client_websocket_url
        .split_once("://")
        .map(|(s, rest)| (s, rest.split('/').next().unwrap_or(rest)));
    let urls: Vec<String> = match base {
        Some((scheme, host)) => c
            .websocket_paths()
            .map(|p| format!("{scheme}://{host}{p}"))
            .collect(),
        None => vec![c.client_websocket_url.clone()],
    };
    let sources: Vec<&str> = c
        .auth
        .token_sources
        .iter()
        .map(|s| match s {
            TokenSource::Header => "header",
            TokenSource::Subprotocol => "subprotocol",
            TokenSource::Query => "query",
            TokenSource::FirstMessage => "first_message",
        })
        .collect();
    serde_json::json!({
        "environment": c.name,
        "protocol": "portcullis.v1",
        "websocket_url": c.client_websocket_url,
        "websocket_urls": urls,
        "subprotocol": "portcullis.v1",
        "token_sources": sources,
        "heartbeat_ms": c.websocket.heartbeat.as_millis() as u64,
        "max_message_bytes": c.websocket.max_message_bytes,
        "messages_per_minute": c.websocket.messages_per_minute,
        "agents": c.agents.iter().map(|a| serde_json::json!({"name": a.name, "default": a.default, "tools": a.tools})).collect::<Vec<_>>(),
    })
}

fn client_config(app: &App) -> Response {
    warp::reply::json(&client_config_value(app)).into_response()
}
