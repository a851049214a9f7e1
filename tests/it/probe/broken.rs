//! Small deliberately broken servers, one per seed: each is named at the right stage
//! with a useful hint, in both output formats.

use portcullis::config::TokenSource;
use portcullis::probe::{self, Sources};

use super::harness::{Broken, assert_failed, broken, options, tls_server};
use crate::auth::idp::TestCa;

#[tokio::test]
async fn a_path_answering_200_json_is_named_at_http() {
    let addr = broken(Broken::JsonOnPath).await;
    let url = format!("ws://{addr}/api/v1/websocket");
    let report = probe::run(&options(&url)).await;
    assert_failed(
        &url,
        &report,
        "http",
        &[
            "200",
            "application/json",
            "plain HTTP route",
            "websocket.path",
            "[[routes]]",
        ],
    );
}

#[tokio::test]
async fn a_redirect_and_an_html_page_are_named_at_http() {
    let url = format!("ws://{}/websocket", broken(Broken::Redirects).await);
    let report = probe::run(&options(&url)).await;
    assert_failed(
        &url,
        &report,
        "http",
        &[
            "301",
            "https://chat.example.com/websocket",
            "do not follow redirects",
            "wss://",
        ],
    );

    let url = format!("ws://{}/websocket", broken(Broken::Html).await);
    let report = probe::run(&options(&url)).await;
    assert_failed(&url, &report, "http", &["HTML page", "text/html", "proxy"]);
}

#[tokio::test]
async fn a_token_echoed_as_the_subprotocol_is_named_and_never_printed() {
    let addr = broken(Broken::EchoesToken).await;
    let url = format!("ws://{addr}/websocket");
    let mut o = options(&url);
    o.token = Some("eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXByb2JlLXRva2Vu.c2ln".into());
    o.sources = Sources::One(TokenSource::Subprotocol);
    let report = probe::run(&o).await;
    assert_failed(
        &url,
        &report,
        "subprotocol",
        &["jwt.<token>", "echo", "portcullis.v1"],
    );
    for text in [probe::human(&url, &report), probe::json(&report)] {
        assert!(
            !text.contains("c2VjcmV0LXByb2JlLXRva2Vu"),
            "the token leaked: {text}"
        );
    }
}

#[tokio::test]
async fn no_subprotocol_selected_is_named() {
    let url = format!("ws://{}/websocket", broken(Broken::SelectsNothing).await);
    let report = probe::run(&options(&url)).await;
    assert_failed(
        &url,
        &report,
        "subprotocol",
        &[
            "no subprotocol",
            "browsers",
            "Sec-WebSocket-Protocol: portcullis.v1",
        ],
    );
}

#[tokio::test]
async fn a_1011_before_connection_established_is_explained() {
    let url = format!("ws://{}/websocket", broken(Broken::Closes1011).await);
    let report = probe::run(&options(&url)).await;
    assert_failed(
        &url,
        &report,
        "established",
        &["closed with 1011", "dependencies are ready", "1013"],
    );
}

#[tokio::test]
async fn an_expired_or_untrusted_certificate_is_named_at_tls() {
    let dir = tempfile::tempdir().unwrap();
    let expired = TestCa::with_validity(Some((2020, 1, 1)));
    let url = format!(
        "wss://localhost:{}/websocket",
        tls_server(&expired).await.port()
    );
    let mut o = options(&url);
    o.ca_file = Some(expired.write_ca(dir.path()));
    let report = probe::run(&o).await;
    assert_failed(
        &url,
        &report,
        "tls",
        &["expired", "renew", "server.tls.cert_file"],
    );

    let untrusted = TestCa::new();
    let url = format!(
        "wss://localhost:{}/websocket",
        tls_server(&untrusted).await.port()
    );
    let report = probe::run(&options(&url)).await;
    assert_failed(
        &url,
        &report,
        "tls",
        &["trusted CA", "full chain", "--ca-file"],
    );
}

#[tokio::test]
async fn a_certificate_expiring_within_14_days_passes_tls_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let soon = chrono::Utc::now() + chrono::Duration::days(5);
    let date = soon.date_naive();
    use chrono::Datelike;
    let ca = TestCa::with_validity(Some((date.year(), date.month() as u8, date.day() as u8)));
    let url = format!("wss://localhost:{}/websocket", tls_server(&ca).await.port());
    let mut o = options(&url);
    o.ca_file = Some(ca.write_ca(dir.path()));
    let report = probe::run(&o).await;
    let tls = report
        .stages
        .iter()
        .find(|s| s.name == "tls")
        .expect("tls stage");
    assert!(tls.ok, "{tls:?}");
    assert!(
        tls.hint.as_deref().unwrap_or("").contains("renew"),
        "{tls:?}"
    );
    assert!(probe::human(&url, &report).contains("WARN tls"));
    // The same server answers the path with 200 JSON: the walk goes on to name that.
    assert_failed(&url, &report, "http", &["200"]);
}
