//! Dependency probes behind the `ready` handler: each required service is asked for a
//! real answer (a SQL `SELECT 1`, a Redis `PING`, a TCP connect for HTTP services) within
//! its `connect_timeout_ms`.

use std::time::Instant;

use serde::Serialize;
use sqlx::Connection;

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
}

async fn probe_one(s: &ServiceConfig) -> Result<(), String> {
    let Some(url) = &s.url else {
        return Err("no URL configured".into());
    };
    let url = url.expose();
    match s.kind {
        ServiceKind::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query("SELECT 1")
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            c.close().await.map_err(|e| e.to_string())
        }
        ServiceKind::Postgres => {
            let mut c = sqlx::PgConnection::connect(url)
                .await
                .map_err(|e| redact(&e.to_string(), url))?;
            sqlx::query("SELECT 1")
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            c.close().await.map_err(|e| e.to_string())
        }
        ServiceKind::Redis => {
            let cfg = deadpool_redis::Config::from_url(url);
            let pool = cfg
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .map_err(|e| e.to_string())?;
            let mut conn = pool.get().await.map_err(|e| redact(&e.to_string(), url))?;
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
        ServiceKind::Openai | ServiceKind::Http => {
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
    }
}

fn redact(msg: &str, url: &str) -> String {
    msg.replace(url, "[url]")
}

/// Probes every service with a URL, each bounded by its connect timeout, concurrently.
/// The database is asked through the store's own pool when it is connected, so `ready`
/// reports what the server itself sees.
pub async fn probe_all(config: &Config, store: Option<&crate::store::Store>) -> Vec<ProbeResult> {
    let futures =
        config
            .services
            .iter()
            .filter(|(_, s)| s.url.is_some())
            .map(|(name, s)| async move {
                let start = Instant::now();
                let is_db = matches!(s.kind, ServiceKind::Sqlite | ServiceKind::Postgres);
                let probe = async {
                    match (is_db, store) {
                        (true, Some(st)) => st.ping().await.map_err(|e| e.to_string()),
                        (true, None) => {
                            Err("the store has not connected yet (retrying)".to_string())
                        }
                        _ => probe_one(s).await,
                    }
                };
                let result = match tokio::time::timeout(s.connect_timeout, probe).await {
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
                }
            });
    futures_util::future::join_all(futures).await
}
