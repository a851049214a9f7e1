//! The store's one error type, its stable codes, and the mappings from `sqlx` errors and
//! (for the SQLite group-commit writer) `rusqlite` errors.
//!
//! No variant ever carries a connection URL: URLs may hold a password, and these messages
//! end up in logs and in `error` frames.

use crate::wire::ErrorCode;
use thiserror::Error;

/// Everything a store call can fail with.
#[derive(Debug, Clone, Error)]
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
    /// The request carries data the store cannot keep as given (text with U+0000, a
    /// value the database refuses as a data exception): the client must change it, and
    /// retrying the same request fails the same way. The text says what is wrong and
    /// holds nothing but the client's own data.
    #[error("{0}")]
    BadData(String),
    /// The database failed in a way retrying will not fix and the request did not cause:
    /// a defect or a damaged database. Clients get no detail; the log has it.
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
            StoreError::ThreadNotFound => ErrorCode::ThreadNotFound.as_str(),
            StoreError::RunNotActive => ErrorCode::RunNotActive.as_str(),
            StoreError::Unavailable(_) => ErrorCode::StoreUnavailable.as_str(),
            StoreError::BadData(_) => ErrorCode::BadMessage.as_str(),
            StoreError::Database(_) => ErrorCode::StoreError.as_str(),
            StoreError::BadUrl(_) => ErrorCode::StoreBadUrl.as_str(),
        }
    }

    /// Whether the same call may succeed if repeated later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// What a client is told about a failed write: what to change for bad data, to
    /// resend for an outage, and nothing of the database's own text for a fault.
    pub fn client_message(&self) -> String {
        match self {
            StoreError::BadData(why) => why.clone(),
            StoreError::Unavailable(_) => {
                "the store is unavailable; resend with the same id".to_string()
            }
            StoreError::ThreadNotFound | StoreError::RunNotActive => self.to_string(),
            StoreError::Database(_) | StoreError::BadUrl(_) => {
                "the store failed; the server's log says why".to_string()
            }
        }
    }
}

/// How a database error code is treated: whether waiting may fix it, whether the
/// request's data must change, or neither.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Transient,
    BadData,
    Fault,
}

/// A SQLite result code (primary or extended: the primary code is its low byte).
/// `SQLITE_BUSY` 5 and `SQLITE_LOCKED` 6 (another process holds the file longer than the
/// busy timeout), `SQLITE_IOERR` 10, `SQLITE_FULL` 13 and `SQLITE_CANTOPEN` 14 may pass;
/// `SQLITE_TOOBIG` 18 is a value over SQLite's length limit, the request's data.
fn sqlite_class(code: i64) -> Class {
    match code & 0xff {
        5 | 6 | 10 | 13 | 14 => Class::Transient,
        18 => Class::BadData,
        _ => Class::Fault,
    }
}

/// A Postgres SQLSTATE. Classes 08 (connection exception: refused, reset, lost), 53
/// (insufficient resources) and 57 (operator intervention: admin or crash shutdown,
/// `cannot_connect_now`, a cancelled statement), `55000`/`55006` (a database that refuses
/// connections, e.g. `ALLOW_CONNECTIONS false`, or is in use), `55P03` (lock not
/// available), serialization failures and deadlocks may pass. Class 22 (data exception:
/// U+0000 in text is 22021) is the request's data, which no retry changes.
///
/// SQLSTATEs are matched as text, never parsed as numbers: "22021" read as a SQLite code
/// has the low byte 5 (`SQLITE_BUSY`), which made U+0000 retryable forever.
fn postgres_class(sqlstate: &str) -> Class {
    let transient = ["08", "53", "57"].iter().any(|c| sqlstate.starts_with(c))
        || matches!(sqlstate, "55000" | "55006" | "55P03" | "40001" | "40P01");
    if transient {
        Class::Transient
    } else if sqlstate.starts_with("22") {
        Class::BadData
    } else {
        Class::Fault
    }
}

impl Class {
    /// The error for a database's answer `message` of this class.
    fn error(self, message: String) -> StoreError {
        match self {
            Class::Transient => StoreError::Unavailable(message),
            Class::BadData => {
                StoreError::BadData(format!("the database refused the data: {message}"))
            }
            Class::Fault => StoreError::Database(message),
        }
    }
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
                let class = if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    code.parse().map_or(Class::Fault, sqlite_class)
                } else {
                    postgres_class(&code)
                };
                class.error(message)
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

/// The SQLite writer's errors, classified like `sqlx`'s ([`sqlite_class`]): what may pass
/// is `Unavailable` (and the writer reopens its connection); anything but a value over
/// SQLite's length limit, a constraint violation included, is `Database`.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error {
            rusqlite::Error::SqliteFailure(e, message) => {
                let code = e.extended_code;
                let text = match message {
                    Some(m) => format!("{m} ({code})"),
                    None => format!("{e} ({code})"),
                };
                sqlite_class(i64::from(code)).error(text)
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

#[cfg(test)]
mod tests {
    use super::{Class, StoreError, postgres_class, sqlite_class};

    #[test]
    fn postgres_sqlstates_are_classified_by_what_a_retry_can_change() {
        for code in [
            "08006", "08001", "53300", "57P01", "57P03", "57014", "55000", "55P03",
        ] {
            assert_eq!(postgres_class(code), Class::Transient, "{code}");
        }
        // 22021 is U+0000; as a number its low byte is SQLite's BUSY.
        for code in ["22021", "22P02", "22001", "22003"] {
            assert_eq!(postgres_class(code), Class::BadData, "{code}");
        }
        for code in ["23505", "42P01", "XX000", ""] {
            assert_eq!(postgres_class(code), Class::Fault, "{code}");
        }
    }

    #[test]
    fn sqlite_codes_are_classified_by_their_primary_code() {
        // BUSY, LOCKED_SHAREDCACHE, IOERR_FSYNC, FULL, CANTOPEN
        for code in [5, 262, 1034, 13, 14] {
            assert_eq!(sqlite_class(code), Class::Transient, "{code}");
        }
        assert_eq!(sqlite_class(18), Class::BadData);
        // CONSTRAINT_UNIQUE, CORRUPT
        for code in [2067, 11] {
            assert_eq!(sqlite_class(code), Class::Fault, "{code}");
        }
    }

    #[test]
    fn codes_retry_and_client_messages_follow_the_class() {
        let bad = StoreError::BadData("the content contains U+0000".into());
        assert_eq!((bad.code(), bad.is_retryable()), ("BAD_MESSAGE", false));
        assert!(bad.client_message().contains("U+0000"));
        let down = StoreError::Unavailable("terminating connection (57P01)".into());
        assert_eq!(
            (down.code(), down.is_retryable()),
            ("STORE_UNAVAILABLE", true)
        );
        assert!(!down.client_message().contains("57P01"));
        let fault = StoreError::Database("duplicate key value violates \"x\" (23505)".into());
        assert_eq!((fault.code(), fault.is_retryable()), ("STORE_ERROR", false));
        assert!(!fault.client_message().contains("23505"));
    }
}
