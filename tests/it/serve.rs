//! `serve` on the production environment against the real services: Postgres as the
//! store of record (a fresh database) and Redis probed through deadpool-redis. The
//! golden path runs end to end over a real socket with the events stored in Postgres.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use portcullis::config::load::LoadOptions;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::agents::fakemodel::FakeModel;
use crate::auth::idp::TestCa;
use crate::store::harness::TestDb;
use portcullis::wire::ClientMessage;

const SECRET: &str = "serve-test-secret-0123456789abcdef-0123456789";

fn redis_url() -> String {
    std::env::var("PORTCULLIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_boots_on_postgres_and_redis_and_serves_a_chat() {
    let db = TestDb::postgres().await;
    // The model: the fake OpenAI-compatible server over TLS, trusted through the model
    // service's ca_file (production refuses plain http).
    let ca = TestCa::new();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca(ca_dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let model = FakeModel::serve_tls(listener, ca.acceptor());
    let model_url = model.url();
    let env: BTreeMap<String, String> = [
        ("PORTCULLIS_JWT_SECRET", SECRET.to_string()),
        ("PORTCULLIS_DATABASE_URL", db.url.clone()),
        ("PORTCULLIS_REDIS_URL", redis_url()),
        ("PORTCULLIS_MODEL_API_KEY", "sk-serve-test".to_string()),
        ("PORTCULLIS_SERVICES__MODEL__URL", model_url),
        (
            "PORTCULLIS_SERVICES__MODEL__CA_FILE",
            ca_file.display().to_string(),
        ),
        ("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let outcome =
        portcullis::compile::compile(&LoadOptions::new("environments", env), "production");
    assert!(outcome.report.is_ok(), "{:?}", outcome.report.errors);
    let compiled = outcome.compiled.expect("valid production config");
    // `check --online` trusts the model through the same ca_file as `serve`.
    let online = portcullis::online::check(&compiled).await;
    let model_findings: Vec<String> = online
        .findings
        .iter()
        .filter(|f| f.path.to_string().starts_with("services.model"))
        .map(|f| format!("{} {}", f.code, f.message))
        .collect();
    assert!(model_findings.is_empty(), "{model_findings:?}");
    let jwt = compiled.config.auth.jwt.clone().expect("jwt settings");
    let server = portcullis::server::start(compiled)
        .await
        .expect("server starts");
    let addr = server.addr;

    let (status, body) = http_get(addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let mut ready = (0, String::new());
    for _ in 0..100 {
        ready = http_get(addr, "/ready").await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready.0, 200, "ready never answered 200: {}", ready.1);
    let deps: Value = serde_json::from_str(&ready.1).expect("json");
    let kinds: Vec<(&str, bool)> = deps["dependencies"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or(""),
                d["ok"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("postgres", true)) && kinds.contains(&("redis", true)),
        "{kinds:?}"
    );

    let token = portcullis::auth::mint_for_config(
        &jwt,
        "erin",
        Duration::from_secs(600),
        chrono::Utc::now(),
    )
    .expect("mint");
    let mut req = format!("ws://{addr}/websocket")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("portcullis.v1, jwt.{token}")
            .parse()
            .expect("header"),
    );
    req.headers_mut().insert(
        "origin",
        "https://chat.example.com".parse().expect("header"),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap_or("")),
        Some("portcullis.v1")
    );
    let first = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = m {
            break serde_json::from_str::<Value>(&t).expect("json frame");
        }
    };
    assert_eq!(first["type"], "connection_established");
    assert_eq!(first["user_id"], "erin");
    ws.send(Message::text(
        ClientMessage::user_message("p1", "what is 2^10?", None, None).to_text(),
    ))
    .await
    .expect("send");
    let mut kinds = Vec::new();
    let completed = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame")
            .expect("open")
            .expect("ok");
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).expect("json");
        kinds.push(v["type"].as_str().unwrap_or("").to_string());
        if v["type"] == "agent_completed" {
            break v;
        }
    };
    assert_eq!(kinds.first().map(String::as_str), Some("ack"));
    // Production runs the openai provider: the model called the calculator, got its
    // result back and answered with it.
    assert_eq!(completed["status"], "ok", "{completed}");
    assert!(kinds.contains(&"tool_completed".to_string()), "{kinds:?}");
    let answer = completed["message"]["content"].as_str().unwrap_or("");
    assert!(answer.contains("1024"), "answer: {answer}");
    // The chat requests (the online check's `GET /models` came first).
    let requests: Vec<_> = model
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    assert_eq!(requests.len(), 2, "a tool step and an answer step");
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some("Bearer sk-serve-test")
    );
    assert_eq!(requests[0].body["model"], "gpt-4o-mini");

    // The events are in Postgres: a fresh store on the same database replays them.
    let store = db.open().await;
    let threads = store.list_threads("erin").await.expect("threads");
    assert_eq!(threads.len(), 1);
    let events = store
        .events_after("erin", &threads[0].thread_id, 0, 100)
        .await
        .expect("events");
    assert_eq!(events.len() as i64, threads[0].last_seq);
    assert_eq!(
        events.len(),
        kinds.len() - 1,
        "every sent event was stored: {kinds:?}"
    );

    server.shutdown();
    tokio::time::timeout(Duration::from_secs(15), server.wait())
        .await
        .expect("shuts down");
}
