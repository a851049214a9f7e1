//! Integration tests of the configuration: every validator rule refused by a fixture in
//! `tests/fixtures/invalid/` (exact codes, `file:line`, the whole report pinned in
//! `snapshots/`), the shipped environments (`explain`, `routes`, `check --all`), drift,
//! `PORTCULLIS_*` overrides, schema staleness and the CLI's exit codes.
//!
//! Paths are given relative to the crate root (cargo runs integration tests from there),
//! so the file names in reports and snapshots are the same on every machine.

mod cli;
mod drift;
mod embedded;
mod environments;
mod invalid;
mod overrides;
mod parity;
mod schema;

use std::collections::BTreeMap;
use std::path::PathBuf;

use portcullis::config::load::LoadOptions;

/// Fake secrets for staging and production. None of them may ever appear in output.
pub const FAKE_JWT_SECRET: &str = "fake-jwt-secret-never-printed-0123456789abcdef";
pub const FAKE_BYPASS_SECRET: &str = "fake-bypass-secret-never-printed-0451";
pub const FAKE_DATABASE_URL: &str =
    "postgres://portcullis:fake-db-password-0451@db.internal:5432/portcullis";
pub const FAKE_DATABASE_PASSWORD: &str = "fake-db-password-0451";
pub const FAKE_REDIS_URL: &str = "rediss://:fake-redis-password-0451@redis.internal:6380";
pub const FAKE_REDIS_PASSWORD: &str = "fake-redis-password-0451";
pub const FAKE_MODEL_API_KEY: &str = "sk-fake-model-key-never-printed-0451";

/// The variables staging and production read, all set to fake values.
pub fn fake_env() -> BTreeMap<String, String> {
    vars(&[
        ("PORTCULLIS_JWT_SECRET", FAKE_JWT_SECRET),
        ("PORTCULLIS_BYPASS_SECRET", FAKE_BYPASS_SECRET),
        ("PORTCULLIS_DATABASE_URL", FAKE_DATABASE_URL),
        ("PORTCULLIS_REDIS_URL", FAKE_REDIS_URL),
        ("PORTCULLIS_MODEL_API_KEY", FAKE_MODEL_API_KEY),
    ])
}

/// An environment map from pairs.
pub fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Options for a config directory given relative to the crate root.
pub fn opts(dir: &str, env: BTreeMap<String, String>) -> LoadOptions {
    LoadOptions::new(PathBuf::from(dir), env)
}

/// Pins `text` as `snapshots/<name>.snap` (the top-level directory, no module prefix).
pub fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}
