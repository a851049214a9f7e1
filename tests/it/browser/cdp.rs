//! A minimal Chrome DevTools Protocol client for the browser test. It launches headless
//! Chromium (Debian's `chromium` package), reads the browser endpoint from its stderr,
//! connects with the project's own WebSocket client (`tokio-tungstenite`) and sends one
//! command at a time, skipping events. Chromium is killed when [`Chromium`] drops, also
//! when the test panics.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The binary Debian's `chromium` package installs (as `/usr/bin/chromium`).
const BINARY: &str = "chromium";
/// Bound on Chromium's start-up and on each single command.
const STEP: Duration = Duration::from_secs(15);

/// Kills the browser process and waits for it before its profile directory is removed.
struct Process {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium with one attached page.
pub struct Chromium {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    _process: Process,
}

impl Chromium {
    /// Starts Chromium and connects to its browser endpoint.
    pub async fn launch() -> Result<Self, String> {
        let profile = tempfile::tempdir().map_err(|e| format!("profile dir: {e}"))?;
        let mut child = Command::new(BINARY)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1100,700",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => "chromium not found: install Debian's `chromium` \
                     package (scripts/test does)"
                    .to_string(),
                _ => format!("cannot start `{BINARY}`: {e}"),
            })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let process = Process {
            child,
            _profile: profile,
        };
        // A thread reads stderr to the end (a full pipe would stall Chromium) and reports
        // the endpoint, or everything it saw if Chromium exits without printing one.
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<String, String>>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut seen = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(url.trim().to_string()));
                    }
                } else if tx.is_some() {
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(format!("chromium exited early; stderr:\n{seen}")));
            }
        });
        let url = timeout(STEP, rx)
            .await
            .map_err(|_| "chromium printed no `DevTools listening on` line in 15 s".to_string())?
            .map_err(|_| "chromium stderr reader vanished".to_string())??;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| format!("connect to DevTools at {url}: {e}"))?;
        Ok(Self {
            ws,
            next_id: 0,
            session: None,
            _process: process,
        })
    }

    /// Sends one command (to the attached page when `page`) and returns its result.
    pub async fn call(&mut self, page: bool, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if page {
            let session = self.session.as_deref().ok_or("no page attached")?;
            msg["sessionId"] = session.into();
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|e| format!("{method}: send: {e}"))?;
        loop {
            let frame = timeout(STEP, self.ws.next())
                .await
                .map_err(|_| format!("{method}: no answer in 15 s"))?
                .ok_or_else(|| format!("{method}: DevTools connection closed"))?
                .map_err(|e| format!("{method}: {e}"))?;
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("{method}: {e}"))?;
            if v["id"].as_u64() != Some(id) {
                continue; // an event, or a late answer
            }
            if let Some(err) = v.get("error") {
                return Err(format!("{method}: {err}"));
            }
            return Ok(v["result"].clone());
        }
    }

    /// Opens `url` in a new tab and attaches to it; later page commands go there.
    pub async fn open(&mut self, url: &str) -> Result<(), String> {
        let target = self
            .call(false, "Target.createTarget", json!({ "url": url }))
            .await?;
        let attached = self
            .call(
                false,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await?;
        let session = attached["sessionId"].as_str().ok_or("no sessionId")?;
        self.session = Some(session.to_string());
        Ok(())
    }

    /// Evaluates `expression` in the page (awaiting promises) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let params =
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true });
        let r = self.call(true, "Runtime.evaluate", params).await?;
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex["exception"]["description"].as_str();
            return Err(format!("`{expression}` threw: {}", text.unwrap_or("?")));
        }
        Ok(r["result"]["value"].clone())
    }

    /// A PNG of the page's viewport.
    pub async fn screenshot(&mut self) -> Result<Vec<u8>, String> {
        let r = self
            .call(true, "Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = r["data"].as_str().ok_or("no screenshot data")?;
        STANDARD
            .decode(data)
            .map_err(|e| format!("screenshot: {e}"))
    }

    /// Asks Chromium to exit; the drop guard kills it anyway.
    pub async fn close(mut self) {
        let _ = self.call(false, "Browser.close", json!({})).await;
    }
}
