//! The built-in HTTP handlers named in `[[routes]]` (docs/PROTOCOL.md §5). Each returns a
//! response or an [`ApiError`]; `recover` is the one place errors become JSON.

use std::time::Duration;

use serde::Deserialize;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::Request;
use super::recover::ApiError;
use crate::app::App;
use crate::auth::{AuthFailure, extract_tokens};
use crate::config::{AuthMode, Handler, TokenSource};
use crate::store::{Store, StoreError};
use crate::wire::ErrorCode;

/// Dispatches a request to its handler.
pub async fn handle(app: &App, handler: Handler, req: Request) -> Result<Response, ApiError> {
    match handler {
        Handler::Health => {
            Ok(warp::reply::json(&serde_json::json!({ "status": "ok" })).into_response())
        }
        Handler::Ready => Ok(ready(app).await),
        Handler::ClientConfig => Ok(warp::reply::json(&client_config_value(app)).into_response()),
        Handler::Threads => threads(app, &req).await,
        Handler::ThreadMessages => thread_messages(app, &req).await,
        Handler::DevToken => dev_token(app, &req),
        Handler::Metrics => {
            let accept = req.headers.get("accept").and_then(|v| v.to_str().ok());
            let (queued, largest) = app.bus.queued_bytes();
            app.metrics.send_queue_bytes.set(queued as i64);
            app.metrics.send_queue_bytes_max.set(largest as i64);
            let (text, content_type) = app.metrics.exposition(accept);
            Ok(warp::reply::with_header(text, "content-type", content_type).into_response())
        }
        Handler::Console => Ok(super::console::page(app)),
    }
}

async fn ready(app: &App) -> Response {
    let deps = crate::readiness::probe_all(
        &app.config,
        crate::readiness::Clients {
            store: app.store.get(),
            redis: app.redis.as_ref(),
        },
    )
    .await;
    let mut deps = deps;
    if let Some(status) = app.verifier.as_ref().and_then(|v| v.key_source_status()) {
        deps.push(crate::readiness::key_source(&status));
    }
    deps.extend(
        app.agents
            .mcp_status()
            .iter()
            .map(crate::readiness::mcp_server),
    );
    let bus_degraded = app
        .bus
        .status()
        .is_some_and(|bus| bus_entry(bus, &mut deps));
    let draining = app.is_draining();
    let ok = !draining && deps.iter().all(|d| d.ok || !d.required);
    let status = match (ok, draining) {
        (true, _) if bus_degraded => "degraded",
        (true, _) => "ready",
        (false, true) => "draining",
        (false, false) => "not_ready",
    };
    let body = serde_json::json!({
        "status": status,
        "node_id": app.node.id,
        "dependencies": deps,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Adds the event bus to `ready`'s dependencies; true when it is degraded. With a Redis
/// bus, Redis being away does not fail readiness: the node still serves its own sockets
/// (its runs' events reach them without Redis) and fills other nodes' events from the
/// store when Redis is back.
fn bus_entry(bus: crate::bus::BusStatus, deps: &mut Vec<crate::readiness::ProbeResult>) -> bool {
    let mut redis_ok = true;
    for d in deps.iter_mut().filter(|d| d.kind == "redis") {
        d.required = false;
        redis_ok &= d.ok;
    }
    let ok = bus.subscribed && bus.publishing;
    deps.push(crate::readiness::ProbeResult {
        name: "event_bus".into(),
        kind: bus.kind.into(),
        required: false,
        ok,
        latency_ms: 0,
        error: if ok { None } else { bus.last_error.clone() },
        detail: serde_json::to_value(&bus).ok(),
    });
    !(ok && redis_ok)
}

/// The caller of an API route: `Authorization: Bearer <jwt>` verified like a socket's.
async fn caller(app: &App, req: &Request) -> Result<String, ApiError> {
    if app.config.auth.mode == AuthMode::None {
        return Ok("anonymous".into());
    }
    let unauthorized = |f: AuthFailure| {
        app.metrics.auth_failure(f.code());
        ApiError::new(
            f.http_status(),
            f.code(),
            format!("{f}; send Authorization: Bearer <token>"),
        )
    };
    let extracted = extract_tokens(&req.headers, None, &[TokenSource::Header]);
    let verifier = app
        .verifier
        .as_ref()
        .ok_or_else(|| unauthorized(AuthFailure::AuthUnavailable("no verifier configured")))?;
    verifier
        .verify_found_async(&extracted.found, chrono::Utc::now())
        .await
        .map(|id| id.user_id)
        .map_err(unauthorized)
}

fn store(app: &App) -> Result<&Store, ApiError> {
    app.store.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StoreUnavailable.as_str(),
            "the message store is not reachable yet; retry shortly",
        )
    })
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::ThreadNotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ThreadNotFound.as_str(),
            "no such thread",
        ),
        // A retryable failure (the database refuses or lost its connections) is 503, so
        // clients and proxies retry; bad data is the request's; anything else is a fault.
        other => {
            let (status, message) = match &other {
                e if e.is_retryable() => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable; retry shortly".to_string(),
                ),
                StoreError::BadData(_) => (StatusCode::BAD_REQUEST, other.client_message()),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, other.client_message()),
            };
            tracing::warn!(error = %other, "store request failed");
            ApiError::new(status, other.code(), message)
        }
    }
}

async fn threads(app: &App, req: &Request) -> Result<Response, ApiError> {
    let user = caller(app, req).await?;
    let threads = store(app)?.list_threads(&user).await.map_err(store_error)?;
    let list: Vec<_> = threads
        .into_iter()
        .map(|t| serde_json::json!({"thread_id": t.thread_id, "title": t.title, "created_at": t.created_at, "updated_at": t.updated_at, "last_seq": t.last_seq}))
        .collect();
    Ok(warp::reply::json(&serde_json::json!({ "threads": list })).into_response())
}

async fn thread_messages(app: &App, req: &Request) -> Result<Response, ApiError> {
    let user = caller(app, req).await?;
    let thread_id = req.params.get("thread_id").cloned().unwrap_or_default();
    let mut after_seq = 0i64;
    for (k, v) in req.query.split('&').filter_map(|p| p.split_once('=')) {
        if k == "after_seq" {
            after_seq = v.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadQuery.as_str(),
                    "after_seq must be a whole number",
                )
            })?;
        }
    }
    let st = store(app)?;
    let messages = st
        .thread_messages(&user, &thread_id)
        .await
        .map_err(store_error)?;
    let events = st
        .events_after(&user, &thread_id, after_seq, 10_000)
        .await
        .map_err(store_error)?;
    let events: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str(&e.json).ok())
        .collect();
    let messages: Vec<_> = messages
        .into_iter()
        .map(|m| serde_json::json!({"message_id": m.message_id, "role": m.role, "content": m.content, "run_id": m.run_id, "created_at": m.created_at}))
        .collect();
    Ok(warp::reply::json(
        &serde_json::json!({ "thread_id": thread_id, "messages": messages, "events": events }),
    )
    .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    ttl_s: Option<u64>,
}

/// Mints a token for a chosen user; only in development and test (the validator refuses
/// the route elsewhere, and this check keeps it refused even if that were bypassed).
fn dev_token(app: &App, req: &Request) -> Result<Response, ApiError> {
    if !app.config.kind.is_relaxed() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound.as_str(),
            "no route here",
        ));
    }
    let body: DevTokenRequest = if req.body.is_empty() {
        DevTokenRequest::default()
    } else {
        serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest.as_str(),
                format!("body must be {{\"user_id\": …, \"ttl_s\": …}}: {e}"),
            )
        })?
    };
    let user = body.user_id.unwrap_or_else(|| "dev-user".into());
    if user.is_empty() || user.len() > 128 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest.as_str(),
            "user_id must be 1 to 128 characters",
        ));
    }
    let ttl = Duration::from_secs(body.ttl_s.unwrap_or(3600).clamp(1, 86_400));
    let jwt = app.config.auth.jwt.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NoSigningKey.as_str(),
            "this environment has no JWT settings",
        )
    })?;
    let now = chrono::Utc::now();
    let token = crate::auth::mint_for_config(jwt, &user, ttl, now).map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NoSigningKey.as_str(),
            e.to_string(),
        )
    })?;
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or_default();
    Ok(warp::reply::json(&serde_json::json!({ "token": token, "user_id": user, "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) })).into_response())
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
    let sources: Vec<&str> = c.auth.token_sources.iter().map(|s| s.as_str()).collect();
    serde_json::json!({
        "environment": c.name,
        "protocol": crate::wire::PROTOCOL,
        "websocket_url": c.client_websocket_url,
        "websocket_urls": urls,
        "websocket_paths": c.websocket_paths().collect::<Vec<_>>(),
        "subprotocol": crate::wire::PROTOCOL,
        "token_sources": sources,
        "heartbeat_ms": c.websocket.heartbeat.as_millis() as u64,
        "max_message_bytes": c.websocket.max_message_bytes,
        "messages_per_minute": c.websocket.messages_per_minute,
        "agents": c.agents.iter().map(|a| serde_json::json!({"name": a.name, "default": a.default, "tools": a.tools})).collect::<Vec<_>>(),
    })
}
