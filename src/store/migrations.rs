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
    Step {
        version: 4,
        description: "one row per run",
        sqlite: include_str!("migrations/sqlite/0004_one_row_per_run.sql"),
        postgres: include_str!("migrations/postgres/0004_one_row_per_run.sql"),
    },
    Step {
        version: 5,
        description: "run leases",
        sqlite: include_str!("migrations/sqlite/0005_run_leases.sql"),
        postgres: include_str!("migrations/postgres/0005_run_leases.sql"),
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

    /// One connection: `sqlite::memory:` is shared between a pool's connections, and a
    /// second one would meet the failed migration's transaction before its rollback.
    async fn memory() -> sqlx::SqlitePool {
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("memory db")
    }

    /// Data stored by version 3 (two threads, a finished and an open run, a second
    /// user's message): what migration 4 moves into one row per run.
    const V3_DATA: &str = "
        INSERT INTO threads (id, user_id, title, created_at, updated_at, last_seq) VALUES
            ('t_1', 'alice', 'one', 'c1', 'u1', 3), ('t_2', 'bob', 'two', 'c2', 'u2', 1);
        INSERT INTO messages (id, thread_id, user_id, client_id, role, content, run_id, created_at) VALUES
            ('m_1', 't_1', 'alice', 'k1', 'user', 'hello', 'r_1', 'a1'),
            ('m_2', 't_2', 'bob', 'k1', 'user', 'bob here', 'r_3', 'a2'),
            ('m_3', 't_1', 'alice', 'k2', 'user', 'again', 'r_2', 'a3'),
            ('m_4', 't_1', 'alice', NULL, 'assistant', 'hi alice', 'r_1', 'a4');
        INSERT INTO runs (id, thread_id, message_id, agent, status, started_at, finished_at) VALUES
            ('r_1', 't_1', 'm_1', 'echo', 'ok', 'a1', 'a4'),
            ('r_3', 't_2', 'm_2', 'echo', 'running', 'a2', NULL),
            ('r_2', 't_1', 'm_3', 'echo', 'running', 'a3', NULL);
        INSERT INTO events (thread_id, seq, run_id, body) VALUES
            ('t_1', 1, 'r_1', '{\"seq\":1}'), ('t_1', 2, 'r_1', '{\"seq\":2}'),
            ('t_1', 3, 'r_2', '{\"seq\":3}'), ('t_2', 1, 'r_3', '{\"seq\":1}');
    ";

    /// A database at version 3 holding [`V3_DATA`].
    async fn at_version_3() -> sqlx::SqlitePool {
        let pool = memory().await;
        migrator_of(&STEPS[..3], |s| s.sqlite)
            .run(&pool)
            .await
            .expect("version 3");
        sqlx::raw_sql(V3_DATA)
            .execute(&pool)
            .await
            .expect("v3 data");
        pool
    }

    #[tokio::test]
    async fn version_4_moves_every_message_run_and_event() {
        let pool = at_version_3().await;
        sqlite().run(&pool).await.expect("every version");

        // Runs in insertion order, each holding its user message and reply.
        type Run = (
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
        );
        let runs: Vec<Run> = sqlx::query_as(
            "SELECT r.id, t.id, r.message_id, r.status, r.reply_id, r.finished_at \
                 FROM runs r JOIN threads t ON t.no = r.thread_no ORDER BY r.no",
        )
        .fetch_all(&pool)
        .await
        .expect("runs");
        let runs: Vec<_> = runs
            .iter()
            .map(|(r, t, m, s, reply, fin)| {
                (
                    r.as_str(),
                    t.as_str(),
                    m.as_str(),
                    s.as_str(),
                    reply.as_deref(),
                    fin.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            runs,
            [
                ("r_1", "t_1", "m_1", "ok", Some("m_4"), Some("a4")),
                ("r_3", "t_2", "m_2", "running", None, None),
                ("r_2", "t_1", "m_3", "running", None, None),
            ]
        );
        // Every event, found through its thread's runs.
        let events: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT t.id, e.first_seq, e.body FROM threads t JOIN runs r ON r.thread_no = t.no \
             JOIN events e ON e.run_no = r.no AND e.last_seq = e.first_seq \
             ORDER BY t.id, e.first_seq",
        )
        .fetch_all(&pool)
        .await
        .expect("events");
        let seqs: Vec<(&str, i64)> = events.iter().map(|(t, s, _)| (t.as_str(), *s)).collect();
        assert_eq!(seqs, [("t_1", 1), ("t_1", 2), ("t_1", 3), ("t_2", 1)]);
        // Client ids stay unique per user.
        let dup = sqlx::query(
            "INSERT INTO runs (id, thread_no, user_id, client_id, message_id, content, agent, \
             status, started_at) VALUES ('r_9', 1, 'alice', 'k1', 'm_9', '', 'echo', 'running', 'x')",
        )
        .execute(&pool)
        .await;
        assert!(dup.is_err(), "(user, client id) stays unique");
    }

    /// An event that no run of its thread owns would become unreachable: the migration
    /// refuses and leaves version 3 as it was.
    #[tokio::test]
    async fn version_4_refuses_to_lose_an_event() {
        let pool = at_version_3().await;
        sqlx::query(
            "INSERT INTO events (thread_id, seq, run_id, body) VALUES ('t_2', 7, 'r_1', '{}')",
        )
        .execute(&pool)
        .await
        .expect("an event filed under another thread's run");
        let refused = sqlite().run(&pool).await;
        assert!(refused.is_err(), "{refused:?}");
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(&pool)
            .await
            .expect("version 3 tables are still there");
        assert_eq!(kept, 4);
    }
}
