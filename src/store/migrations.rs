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
const STEPS: &[Step] = &[Step {
    version: 1,
    description: "init",
    sqlite: include_str!("migrations/sqlite/0001_init.sql"),
    postgres: include_str!("migrations/postgres/0001_init.sql"),
}];

fn migrator(pick: fn(&Step) -> &'static str) -> Migrator {
    let migrations = STEPS
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
