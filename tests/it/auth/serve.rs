//! `serve` with `auth.jwt.jwks_url` on a local HTTPS IdP: the server listens while the IdP
//! is down, `/ready` names the key source, sockets get `AUTH_UNAVAILABLE` 1013 (HTTP 503
//! in handshake mode) and never 401 until a key is known; then the golden path, the API's
//! bearer check and `/metrics`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use portcullis::config::load::LoadOptions;
use portcullis::server::Server;
use serde_json::Value;
use tempfile::TempDir;

use super::idp::{Idp, Mode, SigningKey, TestCa};
use super::remote::claims;
use crate::ws::harness::{Connect, Frame};

/// A server whose keys come from `jwks_url`, from its own config directory.
pub struct RemoteServer {
    pub server: Server,
    _dir: TempDir,
}

/// The test environment with its key source replaced by a remote JWKS.
pub fn environment(jwks_url: &str, ca: &TestCa, reject_at: &str, dir: &Path) -> String {
    let ca_file = ca.write_ca(dir);
    format!(
        r#"
[environment]
name = "test"
kind = "test"

[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080"
shutdown_grace_ms = 1000

[websocket]
path = "/websocket"
allowed_origins = ["http://localhost:8080"]

[auth]
mode = "jwt"
reject_at = "{reject_at}"

[auth.jwt]
algorithms = ["ES256"]
jwks_url = "{jwks_url}"
ca_file = "{ca_file}"
jwks_min_refresh_s = 1
issuer = "https://idp.test/"
audience = "portcullis"

[services.database]
kind = "sqlite"
url = "sqlite://{db}"

[[routes]]
method = "GET"
path = "/ready"
handler = "ready"

[[routes]]
method = "GET"
path = "/metrics"
handler = "metrics"

[[routes]]
method = "GET"
path = "/api/threads"
handler = "threads"

[[agents]]
name = "assistant"
provider = "scripted"
tools = ["calculator"]

[client]
websocket_url = "ws://127.0.0.1:8080/websocket"

# The components the runtime builds (base.toml's defaults).
[components.store]
kind = "sql"
scope = "process"
needs = ["database"]

[components.event_bus]
kind = "local"
scope = "process"

[components.jwt_keys]
kind = "jwt"
scope = "process"

[components.agent_registry]
kind = "agents"
scope = "process"

[components.metrics]
kind = "prometheus"
scope = "process"

[components.rate_limiter]
kind = "local"
scope = "process"

[components.session]
kind = "websocket"
scope = "connection"
needs = ["user_context", "event_bus", "store", "rate_limiter"]

[components.run_context]
kind = "agent_run"
scope = "run"
needs = ["user_context", "session", "store", "event_bus", "agent_registry"]
"#,
        ca_file = ca_file.display(),
        db = dir.join("db.sqlite").display(),
    )
}

impl RemoteServer {
    pub async fn start(toml: impl FnOnce(&Path) -> String) -> RemoteServer {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("test.toml"), toml(dir.path())).expect("write config");
        let opts = LoadOptions::new(dir.path(), BTreeMap::new());
        let server = crate::support::serve(&opts, "test").await;
        crate::support::store_connected(&server).await;
        RemoteServer { server, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        let mut request = reqwest::Client::new().get(self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("HTTP answer");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// The `jwt_keys` entry of `/ready`, with the status.
    pub async fn ready(&self) -> (u16, Value) {
        let (status, body) = self.get("/ready", None).await;
        let body: Value = serde_json::from_str(&body).expect("ready JSON");
        let entry = body["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .find(|d| d["name"] == "jwt_keys")
            .cloned()
            .unwrap_or_else(|| panic!("no jwt_keys in {body}"));
        (status, entry)
    }

    pub fn connect(&self) -> Connect {
        Connect::new(format!("ws://{}/websocket", self.server.addr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_at_boot_is_1013_and_503_until_keys_arrive() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    idp.set_mode(Mode::Status(503));
    let url = idp.url("/jwks.json");
    let server = RemoteServer::start(|dir| environment(&url, &ca, "after_accept", dir)).await;
    let token = key.sign(&claims("ada"));

    let started = tokio::time::Instant::now();
    let (status, entry) = loop {
        let (status, entry) = server.ready().await;
        if entry["detail"]["state"] == "unavailable" {
            break (status, entry);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{entry}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503, "{entry}");
    assert_eq!(
        (entry["ok"].as_bool(), entry["kind"].as_str()),
        (Some(false), Some("jwks_url"))
    );
    assert!(
        entry["error"].as_str().unwrap_or("").contains("HTTP 503"),
        "{entry}"
    );

    let (mut client, _) = server
        .connect()
        .bearer(&token)
        .open()
        .await
        .expect("upgrade");
    let error = client.recv().await;
    assert_eq!(
        (error["code"].as_str(), error["retryable"].as_bool()),
        (Some("AUTH_UNAVAILABLE"), Some(true)),
        "{error}"
    );
    match client.next().await {
        Frame::Close(code, _) => assert_eq!(code, 1013),
        other => panic!("expected close 1013, got {other:?}"),
    }
    let (status, body) = server.get("/api/threads", Some(&token)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("AUTH_UNAVAILABLE"), "{body}");

    idp.set_mode(Mode::Up);
    let started = tokio::time::Instant::now();
    while server.ready().await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut client, _) = server
        .connect()
        .bearer(&token)
        .open()
        .await
        .expect("upgrade");
    let established = client.recv().await;
    assert_eq!(
        established["type"], "connection_established",
        "{established}"
    );
    assert_eq!(established["user_id"], "ada");
    client.ask("m1", "what is 6*7?", None).await;
    let mut answer = Value::Null;
    while answer.is_null() {
        let frame = client.recv().await;
        if frame["type"] == "agent_completed" {
            answer = frame;
        }
    }
    assert!(
        answer["message"]["content"]
            .as_str()
            .unwrap_or("")
            .contains("42"),
        "{answer}"
    );
    let (status, _) = server.get("/api/threads", Some(&token)).await;
    assert_eq!(status, 200);
    let (_, metrics) = server.get("/metrics", None).await;
    for line in [
        "portcullis_jwks_keys 1",
        "portcullis_jwks_stale 0",
        "portcullis_jwks_fetches_total{kind=\"ok\"} 1",
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
    assert!(
        metrics.contains("portcullis_jwks_fetches_total{kind=\"error\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_mode_answers_503_before_keys_and_401_for_a_bad_token_after() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    idp.set_mode(Mode::Hangup);
    let url = idp.url("/jwks.json");
    let server = RemoteServer::start(|dir| environment(&url, &ca, "handshake", dir)).await;
    let token = key.sign(&claims("bo"));
    let refused = server.connect().bearer(&token).refused().await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("AUTH_UNAVAILABLE"),
        "{}",
        refused.body
    );
    idp.set_mode(Mode::Up);
    let started = tokio::time::Instant::now();
    while server.ready().await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let forged = SigningKey::generate(Algorithm::ES256, "k1").sign(&claims("bo"));
    let refused = server.connect().bearer(&forged).refused().await;
    assert_eq!(
        refused.status, 401,
        "a bad token is 401 once keys are known"
    );
    let (mut client, _) = server
        .connect()
        .bearer(&token)
        .open()
        .await
        .expect("upgrade");
    assert_eq!(client.recv().await["type"], "connection_established");
}

/// The `serve` binary on `dir`'s `test` environment at `port`, with `vars` set; killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `jwt_keys` entry of `/ready` once its state is not `starting`.
async fn settled_key_source(port: u16) -> Value {
    let started = tokio::time::Instant::now();
    loop {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/ready")).await
            && let Ok(text) = response.text().await
            && let Ok(body) = serde_json::from_str::<Value>(&text)
            && let Some(entry) = body["dependencies"]
                .as_array()
                .and_then(|deps| deps.iter().find(|d| d["name"] == "jwt_keys"))
            && entry["detail"]["state"] != "starting"
        {
            return entry.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no settled jwt_keys entry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_trust_store_honours_ssl_cert_file() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(dir.path());
    let port = crate::support::free_port();
    // No auth.jwt.ca_file: only the system store can make the IdP's certificate trusted.
    let toml = environment(&idp.url("/jwks.json"), &ca, "after_accept", dir.path())
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(dir.path().join("test.toml"), toml).unwrap();
    let serve = |cert_file: Option<&Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["serve", "--env", "test", "--config-dir"])
            .arg(dir.path())
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(file) = cert_file {
            command.env("SSL_CERT_FILE", file);
        }
        Child(command.spawn().expect("serve starts"))
    };
    {
        let _server = serve(None);
        let entry = settled_key_source(port).await;
        assert_eq!(entry["detail"]["state"], "unavailable", "{entry}");
        let error = entry["error"].as_str().unwrap_or("");
        assert!(error.to_lowercase().contains("certificate"), "{error}");
    }
    let _server = serve(Some(&ca_file));
    let entry = settled_key_source(port).await;
    assert_eq!(entry["detail"]["state"], "fresh", "{entry}");
}
