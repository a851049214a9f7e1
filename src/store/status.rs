//! The migration state of a database, read without changing it (`check --online`):
//! which of this binary's migrations are applied, pending, changed since they were
//! applied, or unknown to it (a newer binary migrated the database). `serve` applies
//! pending ones at boot; sqlx refuses to boot on a changed or unknown one.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;

/// What the database holds against this binary's migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The SQLite file does not exist yet (`serve` creates it).
    pub new_file: bool,
    /// Versions applied, known to this binary, unchanged.
    pub applied: Vec<i64>,
    /// Versions this binary has and the database does not (applied at boot).
    pub pending: Vec<i64>,
    /// Versions applied whose SQL differs from this binary's (boot refuses).
    pub changed: Vec<i64>,
    /// Versions applied that this binary does not know (boot refuses).
    pub unknown: Vec<i64>,
}

/// Connects once (read-only for SQLite) within `timeout` and compares.
pub async fn migration_status(url: &str, timeout: Duration) -> Result<MigrationStatus, String> {
    let work = async {
        match url.split_once(':').map(|(s, _)| s) {
            Some("sqlite") => sqlite(url).await,
            Some("postgres" | "postgresql") => postgres(url).await,
            _ => Err("unsupported URL scheme; expected sqlite:// or postgres://".to_string()),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

async fn sqlite(url: &str) -> Result<MigrationStatus, String> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| format!("cannot parse the sqlite URL: {e}"))?
        .read_only(true)
        .create_if_missing(false);
    let migrator = super::migrations::sqlite();
    if !options.get_filename().exists() {
        let mut status = compare(&migrator, Vec::new());
        status.new_file = true;
        return Ok(status);
    }
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| e.to_string())?;
    let rows = sqlx::query_as(APPLIED).fetch_all(&mut conn).await;
    let _ = conn.close().await;
    Ok(compare(&migrator, applied(rows)?))
}

async fn postgres(url: &str) -> Result<MigrationStatus, String> {
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    let options =
        PgConnectOptions::from_str(url).map_err(|_| "cannot parse the postgres URL".to_string())?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(|e| e.to_string())?;
    let rows = sqlx::query_as(APPLIED).fetch_all(&mut conn).await;
    let _ = conn.close().await;
    Ok(compare(&super::migrations::postgres(), applied(rows)?))
}

/// Every successful migration, as sqlx records them.
const APPLIED: &str =
    "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version";

/// `(version, checksum)` rows; none when sqlx's table is absent (nothing migrated yet).
fn applied(rows: Result<Vec<(i64, Vec<u8>)>, sqlx::Error>) -> Result<Vec<(i64, Vec<u8>)>, String> {
    match rows {
        Ok(rows) => Ok(rows),
        Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

fn compare(migrator: &Migrator, applied: Vec<(i64, Vec<u8>)>) -> MigrationStatus {
    let known: BTreeMap<i64, &[u8]> = migrator
        .iter()
        .map(|m| (m.version, m.checksum.as_ref()))
        .collect();
    let mut status = MigrationStatus::default();
    let applied: BTreeMap<i64, Vec<u8>> = applied.into_iter().collect();
    for (version, checksum) in &applied {
        match known.get(version) {
            None => status.unknown.push(*version),
            Some(k) if *k != checksum.as_slice() => status.changed.push(*version),
            Some(_) => status.applied.push(*version),
        }
    }
    status.pending = known
        .keys()
        .filter(|v| !applied.contains_key(v))
        .copied()
        .collect();
    status
}
