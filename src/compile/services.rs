//! The store and Redis targets: URLs parsed by the drivers that will use them (offline:
//! parsing opens no connection), so a URL `serve` could not use is a diagnostic before
//! boot. Messages never include the URL, which may hold a password.

use std::str::FromStr;

use crate::config::{Config, ServiceKind};
use crate::diagnostic::Finding;
use crate::keypath::{KeyPath, kp};

/// The key a service's URL comes from.
fn url_key(name: &str) -> KeyPath {
    kp(&format!("services.{name}.url"))
}

/// Parses the database URL with the driver of its kind.
pub fn check_store(config: &Config, findings: &mut Vec<Finding>) {
    let Some((name, svc)) = config.database() else {
        return;
    };
    let Some(url) = svc.url.as_ref().filter(|u| u.is_set()) else {
        return;
    };
    let parsed = match svc.kind {
        ServiceKind::Sqlite => sqlx::sqlite::SqliteConnectOptions::from_str(url.expose())
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => sqlx::postgres::PgConnectOptions::from_str(url.expose())
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = parsed {
        findings.push(Finding::error(
            "E_SERVICE_URL",
            url_key(name),
            format!("service `{name}`: the database driver cannot use this URL: {e}"),
            "write sqlite://path/to/file.db or postgres://user@host:5432/database",
        ));
    }
}

/// The Redis pool, built lazily (deadpool opens connections on first use).
pub fn redis_pool(config: &Config, findings: &mut Vec<Finding>) -> Option<deadpool_redis::Pool> {
    let (name, svc) = config.redis()?;
    let url = svc.url.as_ref().filter(|u| u.is_set())?;
    let mut cfg = deadpool_redis::Config::from_url(url.expose());
    cfg.pool = Some(deadpool_redis::PoolConfig::new(svc.pool_size as usize));
    match cfg.create_pool(Some(deadpool_redis::Runtime::Tokio1)) {
        Ok(pool) => Some(pool),
        Err(e) => {
            findings.push(Finding::error(
                "E_SERVICE_URL",
                url_key(name),
                format!("service `{name}`: the Redis client cannot use this URL: {e}"),
                "write redis://host:6379 (or rediss:// for TLS), credentials in url_env",
            ));
            None
        }
    }
}
