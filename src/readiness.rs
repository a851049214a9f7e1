//! Dependency probes behind the `ready` handler: each service is asked for a real answer
//! within its `connect_timeout_ms`, through the process's own pools where it has them
//! (the store's `SELECT 1`, a Redis `PING` on the pool built at boot), and by a TCP
//! connect for HTTP services. A remote JWT key source reports its own state (no probe:
//! its fetch task already knows).

use std::time::Instant;

use serde::Serialize;

use crate::config::{Config, ServiceConfig, ServiceKind};

/// One dependency's state, as the `ready` handler reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Service name.
    pub name: String,
    /// Service kind.
    pub kind: String,
    /// Whether readiness depends on it.
    pub required: bool,
    /// It answered.
    pub ok: bool,
    /// How long the probe took.
    pub latency_ms: u64,
    /// Why it did not answer (never contains the URL, which may hold a password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// More about its state (the remote key source's `KeySourceStatus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// The remote JWT key source as a dependency: required, and ready while it has keys
/// (fresh, or stale while refreshes fail: cached keys still verify tokens).
pub fn key_source(status: &crate::auth::KeySourceStatus) -> ProbeResult {
    ProbeResult {
        name: "jwt_keys".into(),
        kind: status.source.into(),
        required: true,
        ok: status.has_keys(),
        latency_ms: 0,
        error: status.last_error.clone(),
        detail: serde_json::to_value(status).ok(),
    }
}

/// An MCP tool server (`[tools.NAME] kind = "mcp"`) as a dependency: not required (its
/// tools fail with `TOOL_UNAVAILABLE` while it is down), ok while its session is open;
/// allowed tools it does not list are named in `error` and `detail.missing`.
pub fn mcp_server(status: &crate::agent::McpStatus) -> ProbeResult {
    let error = match (&status.error, status.missing.is_empty()) {
        (Some(error), _) if !status.connected => Some(error.clone()),
        (_, false) => Some(format!(
            "allowed tools the server does not list: {}",
            status.missing.join(", ")
        )),
        _ => None,
    };
    ProbeResult {
        name: format!("tools.{}", status.name),
        kind: "mcp".into(),
        required: false,
        ok: status.connected,
        latency_ms: 0,
        error,
        detail: serde_json::to_value(status).ok(),
    }
}

/// The process-scope clients `ready` asks.
#[derive(Clone, Copy)]
pub struct Clients<'a> {
    /// The store, once connected.
    pub store: Option<&'a crate::store::Store>,
    /// The Redis pool, when a Redis service is declared.
    pub redis: Option<&'a deadpool_redis::Pool>,
}

pub(crate) async fn ping_redis(pool: &deadpool_redis::Pool) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let pong: String = deadpool_redis::redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(format!("unexpected PING answer {pong:?}"))
    }
}

async fn tcp_connect(url: &str) -> Result<(), String> {
    let (_, authority, _) = crate::validate::endpoint::split_url(url).ok_or("bad URL")?;
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let target = if host_port.contains(':') {
        host_port.to_string()
    } else if url.starts_with("https") {
        format!("{host_port}:443")
    } else {
        format!("{host_port}:80")
    };
    tokio::net::TcpStream::connect(target)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn probe_one(s: &ServiceConfig, clients: Clients<'_>) -> Result<(), String> {
    match (s.kind, &s.url) {
        (_, None) => Err("no URL configured".into()),
        (ServiceKind::Sqlite | ServiceKind::Postgres, _) => match clients.store {
            Some(st) => st.ping().await.map_err(|e| e.to_string()),
            None => Err("the store has not connected yet (retrying)".into()),
        },
        (ServiceKind::Redis, _) => match clients.redis {
            Some(pool) => ping_redis(pool).await,
            None => Err("no Redis pool was built".into()),
        },
        (ServiceKind::Openai | ServiceKind::Http, Some(url)) => tcp_connect(url.expose()).await,
    }
}

/// Probes every service with a URL, each bounded by its connect timeout, concurrently.
pub async fn probe_all(config: &Config, clients: Clients<'_>) -> Vec<ProbeResult> {
    let futures =
        config
            .services
            .iter()
            .filter(|(_, s)| s.url.is_some())
            .map(|(name, s)| async move {
                let start = Instant::now();
                let result =
                    match tokio::time::timeout(s.connect_timeout, probe_one(s, clients)).await {
                        Ok(r) => r,
                        Err(_) => Err(format!(
                            "no answer within {} ms",
                            s.connect_timeout.as_millis()
                        )),
                    };
                ProbeResult {
                    name: name.clone(),
                    kind: format!("{:?}", s.kind).to_lowercase(),
                    required: s.required,
                    ok: result.is_ok(),
                    latency_ms: start.elapsed().as_millis() as u64,
                    error: result.err(),
                    detail: None,
                }
            });
    futures_util::future::join_all(futures).await
}
