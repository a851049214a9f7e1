//! Native TLS (`[server.tls]`): `wss://` to a client that trusts only the test CA, the
//! golden path over it, and a certificate reloaded from changed files (and on SIGHUP)
//! while an open socket keeps working; a broken file is not swapped in.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use portcullis::config::load::LoadOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::auth::idp::TestCa;
use crate::ws::harness::{ORIGIN, token};
use portcullis::wire::ClientMessage;

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Writes `ca`'s server certificate and key where the server reads them (atomically, by
/// rename, as certificate managers do).
fn install(ca: &TestCa, dir: &Path) {
    for (name, text) in [("cert.pem", &ca.cert_pem), ("key.pem", &ca.key_pem)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

pub fn connector(ca: &TestCa) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Opens `wss://localhost:<port>/websocket`; returns the socket and the certificate the
/// server presented.
async fn open(addr: std::net::SocketAddr, ca: &TestCa) -> (Wss, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector(ca)
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the test CA");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let mut request = format!("wss://localhost:{}/websocket", addr.port())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("origin", ORIGIN.parse().unwrap());
    headers.insert(
        "authorization",
        format!("Bearer {}", token("tess", 600)).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("upgrade over TLS");
    (ws, presented)
}

async fn recv(ws: &mut Wss) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Asks the calculator and returns the answer text.
async fn chat(ws: &mut Wss, id: &str) -> String {
    let ask = ClientMessage::user_message(id, "what is 6*7?", None, None).to_text();
    ws.send(Message::text(ask)).await.unwrap();
    loop {
        let frame = recv(ws).await;
        if frame["type"] == "agent_completed" {
            return frame["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned();
        }
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Opens connections until the server presents `want` (reloads are polled).
async fn until_presented(addr: std::net::SocketAddr, ca: &TestCa, want: &[u8]) {
    let started = tokio::time::Instant::now();
    loop {
        let (mut ws, presented) = open(addr, ca).await;
        let _ = ws.close(None).await;
        if presented == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "certificate never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_serves_the_golden_path_and_reloads_the_certificate_without_dropping_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestCa::new();
    install(&first, dir.path());
    let env: BTreeMap<String, String> = [
        ("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        (
            "PORTCULLIS_SERVER__TLS__CERT_FILE",
            dir.path().join("cert.pem").display().to_string(),
        ),
        (
            "PORTCULLIS_SERVER__TLS__KEY_FILE",
            dir.path().join("key.pem").display().to_string(),
        ),
        (
            "PORTCULLIS_SERVICES__DATABASE__URL",
            format!("sqlite://{}", dir.path().join("db.sqlite").display()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let server = crate::support::serve(&LoadOptions::new("environments", env), "test").await;
    let addr = server.addr;
    crate::support::store_connected(&server).await;

    let (mut held, presented) = open(addr, &first).await;
    assert_eq!(presented, der(&first.cert_pem));
    let established = recv(&mut held).await;
    assert_eq!(
        established["type"], "connection_established",
        "{established}"
    );
    assert_eq!(established["user_id"], "tess");
    assert!(chat(&mut held, "m1").await.contains("42"));

    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::get(format!("http://{addr}/health")).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // New files (same CA, new key and certificate): picked up without a restart.
    let second = TestCa::with_same_ca(&first);
    install(&second, dir.path());
    until_presented(addr, &first, &der(&second.cert_pem)).await;
    assert!(
        chat(&mut held, "m2").await.contains("42"),
        "the open socket survived the reload"
    );

    // A broken certificate file is not swapped in: new handshakes keep working.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").unwrap();
    tokio::time::sleep(portcullis::server::tls::POLL * 2).await;
    let (mut ws, presented) = open(addr, &first).await;
    assert_eq!(presented, der(&second.cert_pem));
    assert_eq!(recv(&mut ws).await["type"], "connection_established");

    // SIGHUP reloads at once, whatever the poll saw.
    let third = TestCa::with_same_ca(&first);
    install(&third, dir.path());
    // The server installed its SIGHUP handler at start, so this does not end the process.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    until_presented(addr, &first, &der(&third.cert_pem)).await;
    assert!(chat(&mut held, "m3").await.contains("42"));

    server.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
}
