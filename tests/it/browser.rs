//! The development console in a real browser: headless Chromium (Debian's `chromium`
//! package; `scripts/test` installs it) loads the page portcullis serves at `/`, gets a dev
//! token, opens the WebSocket with the subprotocols `portcullis.v1` and `jwt.<token>` as
//! browsers must, asks a question and sees the whole event stream up to `agent_completed`.
//! A missing Chromium fails the test; nothing is skipped. Every wait is bounded.

mod cdp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis::config::load::LoadOptions;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep};

use cdp::Chromium;

/// Bound on the whole browser conversation, from page load to `agent_completed`.
const DEADLINE: Duration = Duration::from_secs(30);

/// The events one tool-using run shows, in this order, after the user's message.
const EXPECTED: [&str; 7] = [
    "ack",
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_response",
    "agent_completed",
];

/// The status code of a plain `GET`, or `None` if the server did not answer.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    std::str::from_utf8(&buf)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// What the page shows, for failure messages.
const SNAPSHOT: &str = r##"JSON.stringify({
  status: document.getElementById("status").textContent,
  log: [...document.querySelectorAll("#log .ev")].map(d => d.textContent),
  answer: document.getElementById("answer").textContent })"##;

/// Polls `expr` until it evaluates to `true`; panics with the page's state at `deadline`.
async fn wait_until(chrome: &mut Chromium, deadline: Instant, what: &str, expr: &str) {
    loop {
        // Errors while the page is still loading count as "not yet".
        if chrome.eval(expr).await.ok() == Some(Value::Bool(true)) {
            return;
        }
        if Instant::now() >= deadline {
            let page = chrome.eval(SNAPSHOT).await.unwrap_or_else(|e| e.into());
            panic!("timed out waiting for {what} (`{expr}`); page: {page}");
        }
        sleep(Duration::from_millis(100)).await;
    }
}

async fn eval(chrome: &mut Chromium, expr: &str) -> Value {
    chrome.eval(expr).await.unwrap_or_else(|e| panic!("{e}"))
}

fn screenshot_path(name: &str) -> PathBuf {
    // `<target dir>/tmp` for integration tests, so its parent honours CARGO_TARGET_DIR.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_completes_a_run_in_chromium() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("environments");
    console_run(&config, "browser-console.png").await;
}

/// The same page and run with the default agent on the `openai` provider, its model the
/// local fake model: the browser sees the model's reasoning, its tool call and its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_completes_an_openai_backed_run_in_chromium() {
    let model = crate::agents::fakemodel::FakeModel::start().await;
    let config = crate::agents::openai_default(&model.url());
    console_run(config.path(), "browser-console-openai.png").await;
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "a tool step and an answer step");
    assert_eq!(requests[1].body["messages"][3]["role"], "tool");
}

/// Loads the console from a server on the `test` environment of `config_dir`, asks
/// "what is 6*7?" and checks the page saw the whole run; saves a screenshot as `shot`.
async fn console_run(config_dir: &Path, shot: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let env = BTreeMap::from([
        (
            "PORTCULLIS_SERVICES__DATABASE__URL".to_string(),
            format!("sqlite://{}", dir.path().join("b.db").display()),
        ),
        (
            "PORTCULLIS_SERVER__LISTEN".to_string(),
            format!("127.0.0.1:{port}"),
        ),
        (
            "PORTCULLIS_WEBSOCKET__ALLOWED_ORIGINS".to_string(),
            format!("[\"{origin}\"]"),
        ),
    ]);
    let opts = LoadOptions::new(config_dir, env);
    let server = crate::support::serve(&opts, "test").await;
    let addr = server.addr;
    assert_eq!(addr.port(), port);

    let deadline = Instant::now() + DEADLINE;
    while http_status(addr, "/ready").await != Some(200) {
        assert!(Instant::now() < deadline, "{addr}/ready never answered 200");
        sleep(Duration::from_millis(50)).await;
    }

    let mut chrome = Chromium::launch().await.unwrap_or_else(|e| panic!("{e}"));
    chrome.open(&format!("{origin}/")).await.expect("open tab");
    let c = &mut chrome;
    wait_until(
        c,
        deadline,
        "the console page",
        r#"document.readyState === "complete" && !!document.getElementById("connect")"#,
    )
    .await;

    eval(c, r#"document.getElementById("user").value = "browser-tester"; document.getElementById("connect").click(); true"#).await;
    wait_until(c, deadline, "the connection", r#"document.getElementById("status").textContent.startsWith("connected as browser-tester")"#).await;
    // `ws` is the page's top-level binding; the handshake must have selected the protocol,
    // never the `jwt.` entry.
    let protocol = eval(c, "ws.protocol").await;
    assert_eq!(protocol, "portcullis.v1", "negotiated subprotocol");

    wait_until(
        c,
        deadline,
        "the Send button",
        r#"!document.getElementById("send").disabled"#,
    )
    .await;
    eval(c, r#"document.getElementById("message").value = "what is 6*7?"; document.getElementById("send").click(); true"#).await;
    wait_until(
        c,
        deadline,
        "agent_completed",
        r#"document.getElementById("log").dataset.completed === "1""#,
    )
    .await;

    let types = eval(
        c,
        r##"[...document.querySelectorAll("#log .ev")].map(d => d.className.replace(/^ev /, ""))"##,
    )
    .await;
    let types: Vec<&str> = types
        .as_array()
        .expect("an array of event types")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut rest = types.iter();
    for want in EXPECTED {
        assert!(
            rest.any(|t| *t == want),
            "event `{want}` missing or out of order; the page logged {types:?}"
        );
    }
    assert_eq!(types.first(), Some(&"connection_established"), "{types:?}");
    assert!(
        !types.contains(&"error"),
        "the page logged an error: {types:?}"
    );
    let answer = eval(c, r#"document.getElementById("answer").textContent"#).await;
    let answer = answer.as_str().unwrap_or_default();
    assert!(answer.contains("42"), "answer {answer:?} lacks 42");
    let thread = eval(c, r#"document.getElementById("thread").textContent"#).await;
    assert_ne!(thread, "(new)", "the ack named no thread");

    let png = chrome.screenshot().await.expect("screenshot");
    let path = screenshot_path(shot);
    std::fs::write(&path, png).expect("write screenshot");
    println!("screenshot: {}", path.display());

    chrome.close().await;
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .expect("server stops");
}
