//! The group-commit writer's own connection: a synchronous `rusqlite` connection on the
//! store's file, with the same durability settings as the `sqlx` pool.
//!
//! Through `sqlx`, every statement is a round trip to that connection's worker thread
//! (a channel send, a futex wake and, on a busy core, two context switches), about ten
//! per batch. The writer instead runs a whole batch in one blocking call on this
//! connection: one hand-off per batch (docs/PERFORMANCE.md, item 6). It uses SQLite's own
//! file layer: a VFS that gathered each commit's WAL writes was measured to save nothing
//! outside the noise and was removed (item 10).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::batch;
use crate::store::error::StoreError;

/// Distinct statement texts the writer keeps prepared: eight statement kinds, each in the
/// seven chunk sizes `batch::chunks` produces (all prepared at open, `batch::warm`).
const STATEMENT_CACHE: usize = 128;

/// Where and how the writer opens its connection.
#[derive(Debug, Clone)]
pub(crate) struct WriterSpec {
    /// The database file (already created and migrated by the pool).
    pub path: PathBuf,
    /// How long to wait for another process's lock on the file.
    pub busy_timeout: Duration,
}

/// WAL frames after which a commit checkpoints (SQLite's default). The checkpoint runs
/// inside the writer's commit and every client waits for it, so larger intervals made
/// rare long commits that set the chat p99, at no CPU saved (docs/PERFORMANCE.md item 7).
pub(crate) const WAL_AUTOCHECKPOINT: u32 = 1_000;

/// Opens the writer's connection with the pool's settings: WAL, `synchronous = FULL`
/// (a commit fsyncs the WAL, so an acknowledged message survives a power loss), foreign
/// keys, a checkpoint every ~4 MB of WAL ([`WAL_AUTOCHECKPOINT`]), temporary data in memory.
pub(crate) fn open(spec: &WriterSpec) -> Result<Connection, StoreError> {
    // A plain path, never a `file:` URI; no SQLite mutex: one thread at a time uses it.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(&spec.path, flags).map_err(|e| opening(&spec.path, e))?;
    conn.busy_timeout(spec.busy_timeout)?;
    // `journal_mode` answers with the mode in force; anything but WAL would change both
    // durability and concurrency, so it is checked, not assumed.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "the SQLite file stays in journal mode {mode:?}, not WAL; \
             another process may hold it in a different mode"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let started = std::time::Instant::now();
    let prepared = batch::warm(&conn)?;
    tracing::debug!(
        statements = prepared,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "SQLite writer statements prepared"
    );
    Ok(conn)
}

/// An open failure is `Unavailable` (the writer tries again for the next batch). The
/// path goes to the log, not into the error, which may reach clients in `error` frames.
fn opening(path: &Path, e: rusqlite::Error) -> StoreError {
    tracing::warn!(path = %path.display(), error = %e, "the SQLite writer cannot open the file");
    // rusqlite's message for an open failure repeats the path; the code's text does not.
    let reason = match &e {
        rusqlite::Error::SqliteFailure(code, _) => format!("{code} ({})", code.extended_code),
        other => other.to_string(),
    };
    StoreError::Unavailable(format!(
        "the SQLite writer cannot open the database: {reason}; check that the file exists \
         and is writable by this process"
    ))
}
