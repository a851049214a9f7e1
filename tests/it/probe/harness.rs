//! Probe options for tests, a check that a report names the right stage and hint in
//! both output formats, and the deliberately broken servers: each answers a plain GET
//! and an upgrade the way one seed's server did.

use std::sync::Arc;
use std::time::Duration;

use portcullis::probe::{self, Options, Report, Sources, Target};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::auth::idp::TestCa;

/// Options for `url` with no token, the default sources and a short timeout.
pub fn options(url: &str) -> Options {
    Options {
        target: Target::parse(url).expect("test URL"),
        token: None,
        origin: None,
        sources: Sources::Default,
        chat: None,
        resume: false,
        timeout: Duration::from_secs(5),
        ca_file: None,
        client_config_path: probe::DEFAULT_CLIENT_CONFIG_PATH.into(),
    }
}

/// Asserts the report failed at `stage`, that its detail and hint say each of `words`
/// (case-insensitive), and that both renderings say the same.
pub fn assert_failed(url: &str, report: &Report, stage: &str, words: &[&str]) {
    let human = probe::human(url, report);
    assert_eq!(report.failed_stage.as_deref(), Some(stage), "{human}");
    assert!(!report.ok, "{human}");
    let last = report.stages.last().expect("stages");
    assert_eq!((last.name.as_str(), last.ok), (stage, false), "{human}");
    let said = format!("{} {}", last.detail, last.hint.clone().unwrap_or_default()).to_lowercase();
    for w in words {
        assert!(said.contains(&w.to_lowercase()), "`{w}` not in: {said}");
    }
    assert!(human.contains(&format!("FAIL {stage}")), "{human}");
    assert!(
        human.contains(&format!("FAILED at stage `{stage}`")),
        "{human}"
    );
    assert!(
        human.contains(last.hint.as_deref().unwrap_or("?")),
        "{human}"
    );
    let json: Value = serde_json::from_str(&probe::json(report)).expect("JSON output");
    assert_eq!(json["ok"], false);
    assert_eq!(json["failed_stage"], stage);
    let stages = json["stages"].as_array().expect("stages");
    let failed = stages.last().expect("a stage");
    assert_eq!(
        (failed["name"].as_str(), failed["ok"].as_bool()),
        (Some(stage), Some(false))
    );
    for key in ["name", "ok", "ms", "detail", "hint"] {
        assert!(failed.get(key).is_some(), "{key} missing: {failed}");
    }
    assert!(
        stages[..stages.len() - 1].iter().all(|s| s["ok"] == true),
        "{json}"
    );
}

/// Asserts every stage passed, in both renderings, and returns the stage names.
pub fn assert_passed(url: &str, report: &Report) -> Vec<String> {
    let human = probe::human(url, report);
    assert!(report.ok, "{human}");
    assert!(human.contains("ok: all"), "{human}");
    let json: Value = serde_json::from_str(&probe::json(report)).expect("JSON output");
    assert_eq!(
        (json["ok"].as_bool(), json["failed_stage"].is_null()),
        (Some(true), true)
    );
    report.stages.iter().map(|s| s.name.clone()).collect()
}

/// How a broken server answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Every request on the path gets 200 JSON (a route registered as a plain GET).
    JsonOnPath,
    /// The upgrade selects the client's `jwt.<token>` entry.
    EchoesToken,
    /// The upgrade selects no subprotocol.
    SelectsNothing,
    /// Upgrades, then closes with 1011 before `connection_established`.
    Closes1011,
    /// A 301 to https.
    Redirects,
    /// An SPA's HTML page.
    Html,
}

/// A server answering every connection as `how` says; returns its address.
pub async fn broken(how: Broken) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(answer(tcp, how));
        }
    });
    addr
}

/// A TLS server presenting `ca`'s certificate that answers nothing past the handshake.
pub async fn tls_server(ca: &TestCa) -> std::net::SocketAddr {
    let certs = CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(ca.key_pem.as_bytes()).expect("key PEM");
    let config = rustls::ServerConfig::builder_with_provider(portcullis::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    answer(tls, Broken::JsonOnPath).await;
                }
            });
        }
    });
    addr
}

async fn answer(mut io: impl AsyncRead + AsyncWrite + Unpin, how: Broken) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let upgrade = header("upgrade").is_some();
    let body = r#"{"status":"ok","service":"chat"}"#;
    let reply = match (how, upgrade) {
        (Broken::JsonOnPath, _) => format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()),
        (Broken::Redirects, _) => "HTTP/1.1 301 Moved Permanently\r\nlocation: https://chat.example.com/websocket\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
        (Broken::Html, _) => {
            let page = "<!DOCTYPE html><html><body><div id=app></div></body></html>";
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}", page.len())
        }
        (_, false) => "HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
        (_, true) => {
            let accept = derive_accept_key(header("sec-websocket-key").unwrap_or_default().as_bytes());
            let offered = header("sec-websocket-protocol").unwrap_or_default();
            let selected = match how {
                Broken::EchoesToken => offered.split(',').map(str::trim).find(|p| p.starts_with("jwt.")).map(str::to_string),
                Broken::SelectsNothing => None,
                _ => Some("portcullis.v1".to_string()),
            };
            let protocol = selected.map(|p| format!("sec-websocket-protocol: {p}\r\n")).unwrap_or_default();
            format!("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n{protocol}\r\n")
        }
    };
    let _ = io.write_all(reply.as_bytes()).await;
    if how == Broken::Closes1011 && upgrade {
        // An unmasked close frame: 1011 (0x03F3) and a short reason.
        let _ = io
            .write_all(&[0x88, 0x06, 0x03, 0xF3, b'o', b'o', b'p', b's'])
            .await;
    }
    let _ = io.flush().await;
    // Hold the socket open a moment so the client reads everything before the FIN.
    tokio::time::sleep(Duration::from_millis(200)).await;
}
