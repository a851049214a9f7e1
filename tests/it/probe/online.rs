//! `check --online` against real services: Postgres (a fresh database, then migrated)
//! and Redis for the production environment, both unreachable, a local HTTPS JWKS with
//! and without a usable key, declared tools against a real local MCP server and HTTP tool
//! server (all allowed tools offered, one missing, servers down), and the binary's exit
//! code and `file:line`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use portcullis::config::load::LoadOptions;
use portcullis::diagnostic::{OnlineCheck, Severity};

use crate::auth::idp::{Idp, SigningKey, TestCa};
use crate::store::harness::TestDb;
use crate::ws::tool_servers::{HttpTools, McpServer};

const SECRET: &str = "online-test-secret-0123456789abcdef-0123456789";

fn redis_url() -> String {
    std::env::var("PORTCULLIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The production environment's variables; its model endpoint (https only in
/// production) is a closed local port, so the checks never leave the machine.
fn production(database: &str, redis: &str) -> BTreeMap<String, String> {
    let model = format!("https://127.0.0.1:{}/v1", crate::support::free_port());
    [
        ("PORTCULLIS_JWT_SECRET", SECRET),
        ("PORTCULLIS_DATABASE_URL", database),
        ("PORTCULLIS_REDIS_URL", redis),
        ("PORTCULLIS_MODEL_API_KEY", "sk-online-test"),
        ("PORTCULLIS_SERVICES__MODEL__URL", &model),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The findings about the database and Redis only.
fn store_and_bus(findings: Vec<(String, Severity, String)>) -> Vec<(String, Severity, String)> {
    let model = (
        "E_SERVICE_UNREACHABLE".to_string(),
        Severity::Error,
        "services.model.url".to_string(),
    );
    assert!(
        findings.contains(&model),
        "the closed model port is named: {findings:?}"
    );
    findings.into_iter().filter(|f| f != &model).collect()
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
        store_and_bus(findings),
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
    assert_eq!(store_and_bus(findings), vec![]);
    assert!(
        check(&checks, "services.database")
            .detail
            .contains("0 pending"),
        "{checks:?}"
    );
}

#[tokio::test]
async fn unreachable_required_services_are_errors_at_their_url() {
    let port = crate::support::free_port();
    let vars = production(
        &format!("postgres://postgres@127.0.0.1:{port}/test"),
        &format!("redis://127.0.0.1:{port}"),
    );
    let (checks, findings) = online("environments", "production", vars).await;
    assert!(checks.iter().all(|c| !c.ok), "{checks:?}");
    assert_eq!(
        store_and_bus(findings),
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
    let port = crate::support::free_port();
    let vars = production(
        &format!("postgres://postgres@127.0.0.1:{port}/test"),
        &redis_url(),
    );
    let run = |format: &str| {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "check",
                "--env",
                "production",
                "--online",
                "--format",
                format,
            ])
            .env_clear()
            .envs(&vars)
            .output()
            .expect("check runs")
    };
    let json: serde_json::Value = serde_json::from_slice(&run("json").stdout).expect("JSON");
    assert_eq!(json["ok"], false);
    let online = json["environments"][0]["online"]
        .as_array()
        .expect("online checks");
    let database = online
        .iter()
        .find(|c| c["name"] == "services.database")
        .expect("database");
    assert_eq!(
        (database["ok"].as_bool(), database["required"].as_bool()),
        (Some(false), Some(true))
    );
    assert!(
        database["ms"].is_u64() && database["kind"] == "postgres",
        "{database}"
    );
    let out = run("human");
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
    assert!(!said.contains(SECRET) && !said.contains("sk-online-test"));
}

/// An OpenAI-compatible endpoint listing `gpt-4o-mini`; returns its base URL.
async fn models_endpoint() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            let asked = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","owned_by":"test"}]}"#;
            let reply = match asked.starts_with("GET /v1/models ")
                && asked.contains("authorization: Bearer sk-online-test")
            {
                true => format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                ),
                false => "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_string(),
            };
            let _ = tcp.write_all(reply.as_bytes()).await;
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn an_agent_model_the_endpoint_does_not_list_is_an_error_at_the_agent() {
    let url = models_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    for f in ["base.toml", "test.toml"] {
        std::fs::copy(format!("environments/{f}"), dir.path().join(f)).unwrap();
    }
    let extra = format!(
        r#"
[services.model]
kind = "openai"
url = "{url}"
api_key = "sk-online-test"

[components.agent_registry]
kind = "agents"
scope = "process"
needs = ["model"]

[[agents]]
name = "mini"
provider = "openai"
service = "model"
model = "gpt-4o-mini"

[[agents]]
name = "writer"
provider = "openai"
service = "model"
model = "gpt-missing"
"#
    );
    let file = dir.path().join("test.toml");
    let text = std::fs::read_to_string(&file).unwrap() + &extra;
    std::fs::write(&file, text).unwrap();
    let (checks, findings) = online(dir.path().to_str().unwrap(), "test", BTreeMap::new()).await;
    let model = check(&checks, "services.model");
    assert!(!model.ok, "{checks:?}");
    assert_eq!(model.detail, "GET /models: 1 models listed");
    assert_eq!(
        findings,
        vec![(
            "E_MODEL_NOT_FOUND".into(),
            Severity::Error,
            "agents[2].model".into()
        )]
    );
}

/// The test environment in a temporary directory, with `tables` appended and the test
/// agent also listing `used`.
fn tools_dir(tables: &str, used: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let builtin = r#"tools = ["clock", "calculator", "thread_history"]"#;
    let test = std::fs::read_to_string("environments/test.toml").unwrap();
    assert!(test.contains(builtin), "test.toml's agent lists its tools");
    let listed: Vec<String> = used.iter().map(|n| format!("\"{n}\"")).collect();
    let test = test.replace(
        builtin,
        &format!(
            r#"tools = ["clock", "calculator", "thread_history", {}]"#,
            listed.join(", ")
        ),
    );
    std::fs::copy("environments/base.toml", dir.path().join("base.toml")).unwrap();
    std::fs::write(dir.path().join("test.toml"), format!("{test}\n{tables}")).unwrap();
    dir
}

fn mcp_tool(name: &str, url: &str, allow: &[&str]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[tools.{name}]\nkind = \"mcp\"\nurl = \"{url}\"\nallow = [{}]\n\n",
        allow.join(", ")
    )
}

fn http_tool(name: &str, url: &str) -> String {
    format!(
        "[tools.{name}]\nkind = \"http\"\nurl = \"{url}\"\ndescription = \"{name}\"\nparameters = {{ type = \"object\" }}\n\n"
    )
}

#[tokio::test]
async fn declared_tools_pass_when_the_mcp_server_offers_every_allowed_tool() {
    let mcp = McpServer::start().await;
    let http = HttpTools::start().await;
    let tables = mcp_tool("docs", &mcp.url(), &["search_docs", "lookup"])
        + &http_tool("weather", &http.url("/weather"));
    let dir = tools_dir(&tables, &["docs", "weather"]);
    let (checks, findings) = online(dir.path().to_str().unwrap(), "test", BTreeMap::new()).await;
    assert_eq!(findings, vec![]);
    let docs = check(&checks, "tools.docs");
    assert!(docs.ok && docs.required && docs.kind == "mcp", "{docs:?}");
    assert_eq!(docs.detail, "tools/list: 6 offered, 2 of 2 allowed found");
    let weather = check(&checks, "tools.weather");
    assert!(weather.ok && weather.kind == "http", "{weather:?}");
    assert_eq!(weather.detail, "HEAD answered 200");
    assert!(
        http.recorded().iter().any(|r| r.path == "/weather"),
        "the HEAD reached the tool server"
    );
}

#[tokio::test]
async fn an_allowed_tool_the_mcp_server_does_not_offer_is_named_at_its_allow_entry() {
    let mcp = McpServer::start().await;
    // `docs` is used by the agent (an error); `spare` by none (a warning).
    let tables = mcp_tool("docs", &mcp.url(), &["search_docs", "get_page"])
        + &mcp_tool("spare", &mcp.url(), &["lookup", "nope"]);
    let dir = tools_dir(&tables, &["docs"]);
    let path = dir.path().to_str().unwrap();
    let (checks, findings) = online(path, "test", BTreeMap::new()).await;
    assert!(!check(&checks, "tools.docs").ok, "{checks:?}");
    assert!(check(&checks, "tools.spare").ok, "{checks:?}");
    assert_eq!(
        check(&checks, "tools.docs").detail,
        "tools/list: 6 offered, 1 of 2 allowed found"
    );
    assert_eq!(
        findings,
        vec![
            (
                "E_MCP_TOOL_MISSING".into(),
                Severity::Error,
                "tools.docs.allow[1]".into()
            ),
            (
                "W_MCP_TOOL_MISSING".into(),
                Severity::Warning,
                "tools.spare.allow[1]".into()
            ),
        ]
    );

    // Off the test's runtime thread: the MCP server runs on it.
    let args = ["check", "--env", "test", "--online", "--config-dir", path].map(String::from);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .env_clear()
            .output()
            .expect("check runs")
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("error[E_MCP_TOOL_MISSING]") && said.contains("test.toml:"),
        "{said}"
    );
    assert!(
        said.contains("tools.docs.allow[1]") && said.contains("get_page"),
        "{said}"
    );
    assert!(said.contains("online FAIL tools.docs (mcp)"), "{said}");
}

#[tokio::test]
async fn a_tool_server_down_is_unreachable_and_a_5xx_unhealthy() {
    let http = HttpTools::start().await;
    let closed = format!("127.0.0.1:{}", crate::support::free_port());
    let tables = mcp_tool("docs", &format!("http://{closed}/mcp"), &["search_docs"])
        + &http_tool("broken", &http.url("/broken"))
        + &http_tool("gone", &format!("http://{closed}/x"));
    let dir = tools_dir(&tables, &["docs", "broken", "gone"]);
    let (checks, findings) = online(dir.path().to_str().unwrap(), "test", BTreeMap::new()).await;
    for name in ["tools.docs", "tools.broken", "tools.gone"] {
        assert!(!check(&checks, name).ok, "{checks:?}");
    }
    assert_eq!(
        findings,
        vec![
            (
                "E_SERVICE_UNHEALTHY".into(),
                Severity::Error,
                "tools.broken.url".into()
            ),
            (
                "E_SERVICE_UNREACHABLE".into(),
                Severity::Error,
                "tools.docs.url".into()
            ),
            (
                "E_SERVICE_UNREACHABLE".into(),
                Severity::Error,
                "tools.gone.url".into()
            ),
        ]
    );
    assert!(
        !format!("{checks:?}").contains(&closed),
        "no URL in the details: {checks:?}"
    );
}
