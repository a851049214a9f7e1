//! The store's one error type, its stable codes, and the mappings from `sqlx` errors and
//! (for the SQLite group-commit writer) `rusqlite` errors.
//!
//! No variant ever carries a connection URL: URLs may hold a password, and these messages
//! end up in logs and in `error` frames.

use thiserror::Error;

/// Everything a store call can fail with.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The thread does not exist or belongs to someone else. The two cases are
    /// deliberately indistinguishable so a caller cannot probe for other users' threads.
    #[error("thread not found")]
    ThreadNotFound,
    /// The run does not exist in that thread or has already finished; finishing it again
    /// would break "exactly one `agent_completed` per run".
    #[error("run is not active")]
    RunNotActive,
    /// The database could not be reached or is overloaded (pool timeout, I/O, busy);
    /// retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error that retrying will not fix.
    #[error("database error: {0}")]
    Database(String),
    /// The store URL has an unsupported scheme or cannot be parsed.
    #[error("bad store URL: {0}")]
    BadUrl(String),
}

impl StoreError {
    /// A stable code clients, dashboards and tests can match on.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::ThreadNotFound => "THREAD_NOT_FOUND",
            StoreError::RunNotActive => "RUN_NOT_ACTIVE",
            StoreError::Unavailable(_) => "STORE_UNAVAILABLE",
            StoreError::Database(_) => "STORE_ERROR",
            StoreError::BadUrl(_) => "STORE_BAD_URL",
        }
    }

    /// Whether the same call may succeed if repeated later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// SQLite `SQLITE_BUSY` and `SQLITE_LOCKED` (and their extended codes) mean another
/// writer holds the file longer than the busy timeout: transient, so `Unavailable`.
fn sqlite_busy(code: &str) -> bool {
    code.parse::<i64>()
        .map(|c| matches!(c & 0xff, 5 | 6))
        .unwrap_or(false)
}

/// Postgres classes 08 (connection exception), 53 (insufficient resources) and 57P
/// (operator intervention, e.g. admin shutdown) plus serialization failures and
/// deadlocks are worth a retry.
fn postgres_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "40001"
        || code == "40P01"
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut => {
                StoreError::Unavailable("connection pool timed out".into())
            }
            sqlx::Error::PoolClosed => StoreError::Unavailable("connection pool closed".into()),
            sqlx::Error::Io(e) => StoreError::Unavailable(format!("I/O error: {e}")),
            sqlx::Error::Tls(e) => StoreError::Unavailable(format!("TLS error: {e}")),
            sqlx::Error::WorkerCrashed => StoreError::Unavailable("database worker crashed".into()),
            // Configuration errors come from parsing options; their text names the
            // offending parameter, never the whole URL.
            sqlx::Error::Configuration(e) => StoreError::BadUrl(e.to_string()),
            sqlx::Error::Database(e) => {
                let code = e.code().map(|c| c.into_owned()).unwrap_or_default();
                let message = if code.is_empty() {
                    e.message().to_string()
                } else {
                    format!("{} ({code})", e.message())
                };
                if sqlite_busy(&code) || postgres_transient(&code) {
                    StoreError::Unavailable(message)
                } else {
                    StoreError::Database(message)
                }
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            other => StoreError::Database(format!("migration failed: {other}")),
        }
    }
}

/// The SQLite writer's errors, classified like `sqlx`'s: busy or locked (another process
/// holds the file), I/O failures, a full disk and a file that cannot be opened may pass,
/// so they are `Unavailable` (and the writer reopens its connection); anything else, a
/// constraint violation included, is `Database`.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error {
            rusqlite::Error::SqliteFailure(e, message) => {
                let code = e.extended_code;
                let text = match message {
                    Some(m) => format!("{m} ({code})"),
                    None => format!("{e} ({code})"),
                };
                // SQLITE_BUSY 5, SQLITE_LOCKED 6, SQLITE_IOERR 10, SQLITE_FULL 13,
                // SQLITE_CANTOPEN 14 (primary codes, the low byte of the extended code).
                if matches!(code & 0xff, 5 | 6 | 10 | 13 | 14) {
                    StoreError::Unavailable(text)
                } else {
                    StoreError::Database(text)
                }
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// True when a `sqlx` error is a unique-constraint violation (used to detect a lost
/// idempotency race).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}
