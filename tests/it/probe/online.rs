//! `check --online` against real services: Postgres (a fresh database, then migrated)
//! and Redis for the production environment, both unreachable, a local HTTPS JWKS with
//! and without a usable key, and the binary's exit code and `file:line`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use portcullis::config::load::LoadOptions;
use portcullis::diagnostic::{OnlineCheck, Severity};

use crate::auth::idp::{Idp, SigningKey, TestCa};
use crate::store::harness::TestDb;

const SECRET: &str = "online-test-secret-0123456789abcdef-0123456789";

fn redis_url() -> String {
    std::env::var("PORTCULLIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn production(database: &str, redis: &str) -> BTreeMap<String, String> {
    [
        ("PORTCULLIS_JWT_SECRET", SECRET),
        ("PORTCULLIS_DATABASE_URL", database),
        ("PORTCULLIS_REDIS_URL", redis),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Compiles `env` from `dir` and runs the online checks: (checks, findings as
/// `(code, severity, key)`).
async fn online(
    dir: &str,
    env: &str,
    vars: BTreeMap<String, String>,
) -> (Vec<OnlineCheck>, Vec<(String, Severity, String)>) {
    let outcome = portcullis::compile::compile(&LoadOptions::new(dir, vars), env);
    let compiled = outcome
        .compiled
        .unwrap_or_else(|| panic!("{:?}", outcome.report.errors));
    let found = portcullis::online::check(&compiled).await;
    let findings = found
        .findings
        .iter()
        .map(|f| (f.code.to_string(), f.severity, f.path.to_string()))
        .collect();
    (found.checks, findings)
}

fn check<'a>(checks: &'a [OnlineCheck], name: &str) -> &'a OnlineCheck {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name}: {checks:?}"))
}

#[tokio::test]
async fn postgres_and_redis_answer_and_pending_migrations_are_a_warning_until_applied() {
    let db = TestDb::postgres().await;
    let (checks, findings) = online(
        "environments",
        "production",
        production(&db.url, &redis_url()),
    )
    .await;
    assert!(check(&checks, "services.database").ok, "{checks:?}");
    assert_eq!(check(&checks, "services.redis").detail, "PONG");
    assert_eq!(
        findings,
        vec![(
            "W_MIGRATIONS_PENDING".into(),
            Severity::Warning,
            "services.database.url".into()
        )]
    );

    let store = portcullis::store::Store::connect(&db.url, 2, Duration::from_secs(5))
        .await
        .expect("migrates");
    store.close().await;
    let (checks, findings) = online(
        "environments",
        "production",
        production(&db.url, &redis_url()),
    )
    .await;
    assert_eq!(findings, vec![]);
    assert!(
        check(&checks, "services.database")
            .detail
            .contains("0 pending"),
        "{checks:?}"
    );
}

#[tokio::test]
async fn unreachable_required_services_are_errors_at_their_url() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let vars = production(
        &format!("postgres://postgres@127.0.0.1:{port}/test"),
        &format!("redis://127.0.0.1:{port}"),
    );
    let (checks, findings) = online("environments", "production", vars).await;
    assert!(checks.iter().all(|c| !c.ok), "{checks:?}");
    assert_eq!(
        findings,
        vec![
            (
                "E_SERVICE_UNREACHABLE".into(),
                Severity::Error,
                "services.database.url".into()
            ),
            (
                "E_SERVICE_UNREACHABLE".into(),
                Severity::Error,
                "services.redis.url".into()
            ),
        ]
    );
}

#[tokio::test]
async fn a_jwks_without_a_usable_key_is_named() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml =
        crate::auth::serve::environment(&idp.url("/jwks.json"), &ca, "after_accept", dir.path());
    std::fs::write(dir.path().join("test.toml"), toml).unwrap();
    let path = dir.path().to_str().unwrap();
    let (checks, findings) = online(path, "test", BTreeMap::new()).await;
    assert_eq!(check(&checks, "auth.jwt.jwks_url").detail, "1 usable keys");
    assert_eq!(findings, vec![]);

    idp.set_keys(&[&SigningKey::generate(Algorithm::RS256, "rsa")]);
    let (checks, findings) = online(path, "test", BTreeMap::new()).await;
    assert!(!check(&checks, "auth.jwt.jwks_url").ok, "{checks:?}");
    assert_eq!(
        findings,
        vec![(
            "E_JWKS_NO_USABLE_KEY".into(),
            Severity::Error,
            "auth.jwt.jwks_url".into()
        )]
    );
}

#[test]
fn the_binary_exits_1_and_names_file_and_line() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--env", "production", "--online"])
        .env_clear()
        .envs(production(
            &format!("postgres://postgres@127.0.0.1:{port}/test"),
            &redis_url(),
        ))
        .output()
        .expect("check runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("error[E_SERVICE_UNREACHABLE] environments/production.toml:"),
        "{said}"
    );
    assert!(
        said.contains("online FAIL services.database (postgres)"),
        "{said}"
    );
    assert!(
        said.contains("online ok   services.redis (redis)"),
        "{said}"
    );
    assert!(!said.contains(SECRET));
}
