//! The real server (the `test` environment, in process) healthy and in each broken state
//! the seeds describe: a wrong path, a refused Origin, a bad token, a dependency not
//! ready, each named at the right stage with the key to look at.

use portcullis::config::TokenSource;
use portcullis::probe::{self, Sources};

use super::harness::{assert_failed, assert_passed, options};
use crate::ws::harness::{ORIGIN, TestServer, claims, sign_with, token};

#[tokio::test]
async fn a_healthy_server_passes_every_stage_with_chat_and_resume() {
    let s = TestServer::start(&[]).await;
    let url = format!("http://{}", s.addr);
    let mut o = options(&url);
    o.token = Some(token("alice", 600));
    o.origin = Some(ORIGIN.into());
    o.chat = Some("what is 12*7?".into());
    o.resume = true;
    let report = probe::run(&o).await;
    let names = assert_passed(&url, &report);
    let expected = [
        "resolve",
        "tcp",
        "client_config",
        "http",
        "upgrade",
        "subprotocol",
        "established",
        "ping",
        "chat",
        "resume",
    ];
    assert_eq!(names, expected);
    let stage = |n: &str| report.stages.iter().find(|s| s.name == n).expect(n);
    assert!(stage("chat").detail.contains("84"), "{:?}", stage("chat"));
    assert!(
        stage("chat").detail.contains("agent_completed ok"),
        "{:?}",
        stage("chat")
    );
    assert!(
        stage("resume").detail.contains("identical"),
        "{:?}",
        stage("resume")
    );
    // The test environment tells clients 127.0.0.1:8080: a warning, not a failure.
    let warning = stage("client_config").hint.clone().unwrap_or_default();
    assert!(warning.contains("client.websocket_url"), "{warning}");
    assert!(probe::human(&url, &report).contains("WARN client_config"));
}

#[tokio::test]
async fn every_enabled_token_source_is_tried_with_all() {
    let s = TestServer::start(&[]).await;
    let url = s.url("/websocket");
    let mut o = options(&url);
    o.token = Some(token("bob", 600));
    o.sources = Sources::All;
    let report = probe::run(&o).await;
    let names = assert_passed(&url, &report);
    for source in ["header", "subprotocol", "first_message"] {
        assert!(
            names.contains(&format!("established [{source}]")),
            "{names:?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_path_is_named_at_http_with_the_server_paths() {
    let s = TestServer::start(&[]).await;
    let url = s.url("/api/v1/websocket");
    let report = probe::run(&options(&url)).await;
    assert_failed(
        &url,
        &report,
        "http",
        &[
            "404",
            "websocket.aliases",
            "client.websocket_url",
            "the server's WebSocket paths: /websocket, /ws",
        ],
    );
}

#[tokio::test]
async fn a_refused_origin_is_told_apart_from_a_token_refusal() {
    let s = TestServer::start(&[]).await;
    let url = s.url("/websocket");
    let mut o = options(&url);
    o.token = Some(token("alice", 600));
    o.origin = Some("https://evil.example".into());
    let report = probe::run(&o).await;
    assert_failed(
        &url,
        &report,
        "upgrade",
        &[
            "403",
            "ORIGIN_NOT_ALLOWED",
            "not a token problem",
            "websocket.allowed_origins",
            "https://evil.example",
        ],
    );
}

#[tokio::test]
async fn a_bad_token_is_named_at_established_or_at_the_upgrade_in_handshake_mode() {
    let bad = sign_with(
        &claims("alice", 600),
        "another-secret-0123456789abcdef-0123456789",
    );
    let s = TestServer::start(&[]).await;
    let url = s.url("/websocket");
    let mut o = options(&url);
    o.token = Some(bad.clone());
    o.sources = Sources::One(TokenSource::Subprotocol);
    let report = probe::run(&o).await;
    assert_failed(
        &url,
        &report,
        "established",
        &["INVALID_TOKEN", "4401", "auth.jwt"],
    );
    assert!(
        !probe::json(&report).contains(&bad),
        "the token is never printed"
    );

    let s = TestServer::start(&[("AUTH__REJECT_AT", "handshake")]).await;
    let url = s.url("/websocket");
    let mut o = options(&url);
    o.token = Some(bad);
    let report = probe::run(&o).await;
    assert_failed(
        &url,
        &report,
        "upgrade",
        &["401", "INVALID_TOKEN", "auth.jwt"],
    );
}

#[tokio::test]
async fn no_token_says_how_to_pass_one() {
    let s = TestServer::start(&[("AUTH__FIRST_MESSAGE_TIMEOUT_MS", "300")]).await;
    let url = s.url("/websocket");
    let report = probe::run(&options(&url)).await;
    assert_failed(
        &url,
        &report,
        "established",
        &["AUTH_TIMEOUT", "--token", "--env NAME --sub USER"],
    );
}

#[tokio::test]
async fn a_dependency_not_ready_is_named_at_established_or_at_the_upgrade() {
    let unreachable = (
        "SERVICES__DATABASE__URL",
        "sqlite:///proc/portcullis/none.db",
    );
    let s = TestServer::start_unready(&[unreachable]).await;
    let url = s.url("/websocket");
    let mut o = options(&url);
    o.token = Some(token("alice", 600));
    let report = probe::run(&o).await;
    assert_failed(
        &url,
        &report,
        "established",
        &[
            "STORE_UNAVAILABLE",
            "1013",
            "services.<database>",
            "ready route",
        ],
    );

    let s = TestServer::start_unready(&[unreachable, ("AUTH__REJECT_AT", "handshake")]).await;
    let url = s.url("/websocket");
    let mut o = options(&url);
    o.token = Some(token("alice", 600));
    let report = probe::run(&o).await;
    assert_failed(
        &url,
        &report,
        "upgrade",
        &["503", "STORE_UNAVAILABLE", "services.<database>"],
    );
}

#[tokio::test]
async fn a_healthy_wss_server_passes_tls_and_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::auth::idp::TestCa::new();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &ca.cert_pem).unwrap();
    std::fs::write(&key, &ca.key_pem).unwrap();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let s = TestServer::start(&[
        ("SERVER__TLS__CERT_FILE", &cert),
        ("SERVER__TLS__KEY_FILE", &key),
    ])
    .await;
    let url = format!("https://localhost:{}", s.addr.port());
    let mut o = options(&url);
    o.token = Some(token("tess", 600));
    o.ca_file = Some(ca.write_ca(dir.path()));
    o.chat = Some("what is 6*7?".into());
    o.resume = true;
    let report = probe::run(&o).await;
    let names = assert_passed(&url, &report);
    assert_eq!(names[..3], ["resolve", "tcp", "tls"]);
    let tls = &report.stages[2];
    assert!(
        tls.detail.contains("certificate for localhost trusted"),
        "{tls:?}"
    );
    assert!(tls.hint.is_none(), "{tls:?}");
    // The test environment gives clients ws://: over https that is mixed content.
    let config = report
        .stages
        .iter()
        .find(|s| s.name == "client_config")
        .unwrap();
    assert!(
        config
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("mixed content"),
        "{config:?}"
    );
    assert!(report.stages.last().unwrap().detail.contains("identical"));
}

#[tokio::test]
async fn a_token_sent_where_the_server_does_not_look_is_named() {
    let s = TestServer::start(&[("AUTH__TOKEN_SOURCES", r#"["header"]"#)]).await;
    let url = format!("http://{}", s.addr);
    let mut o = options(&url);
    o.token = Some(token("alice", 600));
    o.sources = Sources::One(TokenSource::Subprotocol);
    let report = probe::run(&o).await;
    assert_failed(
        &url,
        &report,
        "established",
        &[
            "NO_TOKEN",
            "`subprotocol`",
            "does not read",
            "--token-source header",
            "auth.token_sources",
        ],
    );
}
