//! Agents on the `openai` provider over real sockets: a server per test whose `test`
//! environment gains a model service pointing at the local fake model
//! (`benches/fakemodel/server.rs`, the exact chat-completions streaming format), and a
//! WebSocket client ([`crate::ws::harness`]).

mod bounds;
mod failures;
#[path = "../../benches/fakemodel/server.rs"]
#[allow(dead_code)]
pub mod fakemodel;
mod history;
mod openai;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tempfile::TempDir;

use crate::ws::harness::{Client, TestServer};
use fakemodel::FakeModel;
use portcullis::wire::ClientMessage;

/// The API key the test model service sends.
pub const API_KEY: &str = "sk-agents-test-key-0451";

/// A fake model and a server whose agents call it.
pub struct Env {
    pub model: FakeModel,
    pub server: TestServer,
    _config: TempDir,
}

/// Starts a fake model and the `test` environment plus `[services.model]` (the fake
/// model; `service_extra` lines appended to it) and `agents` (TOML `[[agents]]` tables,
/// added after the scripted default `assistant`).
pub async fn start(service_extra: &str, agents: &str) -> Env {
    let model = FakeModel::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy("environments/base.toml", dir.path().join("base.toml")).expect("base");
    let mut test = std::fs::read_to_string("environments/test.toml").expect("test.toml");
    test.push_str(&format!(
        r#"
[services.model]
kind = "openai"
url = "{url}"
api_key = "{API_KEY}"
required = false
{service_extra}

[components.agent_registry]
kind = "agents"
scope = "process"
needs = ["model"]

{agents}
"#,
        url = model.url()
    ));
    std::fs::write(dir.path().join("test.toml"), test).expect("write test.toml");
    let server = TestServer::start_in(dir.path().to_str().unwrap(), &[]).await;
    let started = tokio::time::Instant::now();
    while server.app().store.get().is_none() {
        assert!(started.elapsed().as_secs() < 10, "store never connected");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Env {
        model,
        server,
        _config: dir,
    }
}

/// A config directory whose `test` environment's default agent (`assistant`) is on the
/// `openai` provider, its model at `url` (model `echo`).
pub fn openai_default(url: &str) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy("environments/base.toml", dir.path().join("base.toml")).expect("base");
    let test = std::fs::read_to_string("environments/test.toml").expect("test.toml");
    let scripted = "name = \"assistant\"\nprovider = \"scripted\"\n";
    assert!(test.contains(scripted), "test.toml's assistant changed");
    let mut test = test.replace(
        scripted,
        "name = \"assistant\"\nprovider = \"openai\"\nservice = \"model\"\nmodel = \"echo\"\n",
    );
    test.push_str(&format!(
        "\n[services.model]\nkind = \"openai\"\nurl = \"{url}\"\n\n\
         [components.agent_registry]\nkind = \"agents\"\nscope = \"process\"\nneeds = [\"model\"]\n"
    ));
    std::fs::write(dir.path().join("test.toml"), test).expect("write test.toml");
    dir
}

/// One `openai` agent `name` on model `model`, with `extra` TOML lines.
pub fn agent(name: &str, model: &str, extra: &str) -> String {
    format!(
        "[[agents]]\nname = \"{name}\"\nprovider = \"openai\"\nservice = \"model\"\nmodel = \"{model}\"\n{extra}\n"
    )
}

/// Sends `content` to `agent` (in `thread`, or a new one) and reads the run to its end:
/// the ack and the run's events.
pub async fn ask(
    c: &mut Client,
    agent: &str,
    content: &str,
    thread: Option<&str>,
) -> (Value, Vec<Value>) {
    // Ids are idempotency keys: each message needs its own.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let id = format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed));
    c.send_msg(ClientMessage::user_message(
        &id,
        content,
        thread,
        Some(agent),
    ))
    .await;
    let ack = c.recv_type("ack").await;
    let run_id = ack["run_id"].as_str().expect("run_id").to_string();
    let events = c.run_events(&run_id).await;
    (ack, events)
}

/// The concatenated `agent_response` deltas of a run.
pub fn streamed(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "agent_response")
        .map(|e| e["delta"].as_str().unwrap_or(""))
        .collect()
}
