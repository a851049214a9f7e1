//! Schema migrations for both databases, embedded in the binary.
//!
//! The SQL lives in `migrations/{sqlite,postgres}/` and is compiled in with
//! `include_str!`, so a deployed binary needs no migration files on disk and the build
//! needs neither a database nor sqlx's `macros` feature. sqlx records applied versions
//! and checksums in `_sqlx_migrations`, which makes running them on every boot a no-op
//! after the first; on Postgres it also takes an advisory lock, so several nodes booting
//! at once migrate exactly once.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One migration: version, description and the SQL for each database.
struct Step {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Every migration in order. Never edit a released step (its checksum is recorded);
/// add a new one.
const STEPS: &[Step] = &[
    Step {
        version: 1,
        description: "init",
        sqlite: include_str!("migrations/sqlite/0001_init.sql"),
        postgres: include_str!("migrations/postgres/0001_init.sql"),
    },
    Step {
        version: 2,
        description: "events append-only",
        sqlite: include_str!("migrations/sqlite/0002_events_append_only.sql"),
        postgres: include_str!("migrations/postgres/0002_events_append_only.sql"),
    },
    Step {
        version: 3,
        description: "fewer index writes",
        sqlite: include_str!("migrations/sqlite/0003_fewer_index_writes.sql"),
        postgres: include_str!("migrations/postgres/0003_fewer_index_writes.sql"),
    },
];

fn migrator(pick: fn(&Step) -> &'static str) -> Migrator {
    migrator_of(STEPS, pick)
}

fn migrator_of(steps: &[Step], pick: fn(&Step) -> &'static str) -> Migrator {
    let migrations = steps
        .iter()
        .map(|step| {
            Migration::new(
                step.version,
                Cow::Borrowed(step.description),
                MigrationType::Simple,
                pick(step).into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// The SQLite migrations.
pub(crate) fn sqlite() -> Migrator {
    migrator(|step| step.sqlite)
}

/// The Postgres migrations.
pub(crate) fn postgres() -> Migrator {
    migrator(|step| step.postgres)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_survive_the_move_to_an_append_only_table() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("memory db");
        migrator_of(&STEPS[..1], |s| s.sqlite)
            .run(&pool)
            .await
            .expect("version 1");
        sqlx::query(
            "INSERT INTO events (thread_id, seq, run_id, body) VALUES ('t_1', 1, 'r_1', '{}')",
        )
        .execute(&pool)
        .await
        .expect("an event in the old layout");
        sqlite().run(&pool).await.expect("every version");
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE thread_id = 't_1' AND seq = 1")
                .fetch_one(&pool)
                .await
                .expect("count");
        assert_eq!(n, 1);
        let dup = sqlx::query(
            "INSERT INTO events (thread_id, seq, run_id, body) VALUES ('t_1', 1, 'r_2', '{}')",
        )
        .execute(&pool)
        .await;
        assert!(dup.is_err(), "seq stays unique per thread");
    }
}
