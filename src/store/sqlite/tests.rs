//! Checks of the SQLite connection settings that durability rests on; the integration
//! tests cannot see per-connection pragmas through the public API.

use std::time::Duration;

use super::SqliteStore;

#[tokio::test]
async fn every_connection_is_wal_with_full_sync_and_foreign_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("a/b/c.db").display());
    let store = SqliteStore::connect(&url, 3, Duration::from_secs(5))
        .await
        .expect("connect");
    // Hold every pooled connection at once so each one is checked, not just the first.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = store.pool.acquire().await.expect("acquire");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .expect("journal_mode");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .expect("synchronous");
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .expect("foreign_keys");
        // synchronous: 2 is FULL.
        assert_eq!((journal.as_str(), synchronous, foreign_keys), ("wal", 2, 1));
        held.push(conn);
    }
}
