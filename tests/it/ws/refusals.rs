//! Every refused upgrade is logged at `info` with its reason code and without any secret:
//! a real `portcullis serve` process, its log read from stdout, and refusals of each kind
//! (Origin, token, bypass header without its secret, connection cap, WebSocket version).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::harness::*;

/// A served `test` environment whose stdout (the log) is collected line by line.
struct Served {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("r.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config-dir", "environments", "--env", "test"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS_SERVER__MAX_CONNECTIONS", "1")
        .env("PORTCULLIS_SERVICES__DATABASE__URL", db)
        .env("PORTCULLIS_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&log);
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let address = regex::Regex::new(r"127\.0\.0\.1:\d+").unwrap();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(address.find(&line).unwrap().as_str().to_string());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(FRAME_TIMEOUT)
        .expect("no `listening` line in the log");
    Served {
        child,
        addr,
        log,
        _dir: dir,
    }
}

impl Served {
    fn connect(&self) -> Connect {
        Connect::new(format!("ws://{}/websocket", self.addr))
    }

    /// Waits until a log line has `needle`; returns it.
    async fn logged(&self, needle: &str) -> String {
        let started = tokio::time::Instant::now();
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(
                started.elapsed() < FRAME_TIMEOUT,
                "no log line with {needle}:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn every_refused_upgrade_is_logged_with_its_reason_and_no_secret() {
    let s = serve();
    // Wait for the store, so no refusal is a STORE_UNAVAILABLE.
    s.logged("store connected").await;
    let bad_token = "not.a-token.SECRET-MARK-1";
    let wrong_secret = "SECRET-MARK-2-wrong-bypass";

    let reply = s
        .connect()
        .origin(Some("http://evil.example"))
        .refused()
        .await;
    assert_eq!(reply.status, 403);
    let line = s.logged("ORIGIN_NOT_ALLOWED").await;
    assert!(line.contains("refused a WebSocket upgrade"), "{line}");

    let (mut c, _) = s.connect().bearer(bad_token).open().await.unwrap();
    assert_eq!(c.until_close().await.1, 4401);
    s.logged("INVALID_TOKEN").await;

    let (mut c, _) = s
        .connect()
        .header(BYPASS_HEADER, wrong_secret)
        .bearer(bad_token)
        .open()
        .await
        .unwrap();
    assert_eq!(c.until_close().await.1, 4401);
    s.logged("BYPASS_NOT_MATCHED").await;

    // The one connection slot taken, the next is refused.
    let (mut alice, _) = s
        .connect()
        .bearer(&token("alice", 600))
        .open()
        .await
        .unwrap();
    alice.recv_type("connection_established").await;
    let (mut c, _) = s.connect().bearer(&token("bob", 600)).open().await.unwrap();
    assert_eq!(c.until_close().await.1, 4429);
    s.logged("CONNECTION_LIMIT").await;

    let raw = s.addr.parse().unwrap();
    let version = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "8"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let reply = raw_http(raw, "/websocket", &version).await;
    assert!(reply.starts_with("HTTP/1.1 426"), "{reply}");
    s.logged("UPGRADE_REQUIRED").await;

    let log = s.log.lock().unwrap().join("\n");
    for secret in [bad_token, wrong_secret, BYPASS_SECRET, SECRET] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }
    let refusals = log.matches("refused a WebSocket upgrade").count();
    assert!(refusals >= 5, "{log}");
}

/// A raw HTTP request; returns the whole answer.
async fn raw_http(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(FRAME_TIMEOUT, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}
