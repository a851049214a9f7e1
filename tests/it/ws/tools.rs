//! Declared tools (`[tools.NAME]`, kinds `http` and `mcp`) called over a real WebSocket:
//! the scripted agent's `[[call:NAME {…}]]` hook makes it call them, the tools call local
//! servers ([`super::tool_servers`]), and the run's events carry their results and errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{TestServer, token, types};
use super::tool_servers::{HttpTools, McpServer};

/// A config directory: the shipped base and test environments, with `tools` declared and
/// added to the test agent's list.
fn config_dir(tables: &str, names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("config dir");
    let base = std::fs::read_to_string("environments/base.toml").expect("base.toml");
    let test = std::fs::read_to_string("environments/test.toml").expect("test.toml");
    let builtin = r#"tools = ["clock", "calculator", "thread_history"]"#;
    assert!(test.contains(builtin), "test.toml's agent lists its tools");
    let listed: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let test = test.replace(
        builtin,
        &format!(
            r#"tools = ["clock", "calculator", "thread_history", {}]"#,
            listed.join(", ")
        ),
    );
    std::fs::write(dir.path().join("base.toml"), base).expect("write base");
    std::fs::write(dir.path().join("test.toml"), format!("{test}\n{tables}")).expect("write");
    dir
}

/// The `http` tools of these tests, against `tools`; `unreachable` is a closed port.
fn http_tables(tools: &HttpTools, unreachable: &str) -> String {
    let params =
        r#"{ type = "object", properties = { city = { type = "string" } }, required = ["city"] }"#;
    let open = r#"{ type = "object" }"#;
    let table = |name: &str, url: String, parameters: &str, extra: &str| {
        format!(
            "[tools.{name}]\nkind = \"http\"\nurl = \"{url}\"\ndescription = \"{name} tool\"\nparameters = {parameters}\n{extra}\n"
        )
    };
    [
        table("weather", tools.url("/weather"), params, ""),
        table("anon", tools.url("/weather"), params, "needs = []"),
        table("broken", tools.url("/broken"), open, ""),
        table("slow", tools.url("/slow"), open, "timeout_ms = 200"),
        table("big", tools.url("/big"), open, "max_result_bytes = 1024"),
        table("notjson", tools.url("/notjson"), open, ""),
        table("gone", format!("http://{unreachable}/x"), open, ""),
    ]
    .join("\n")
}

const HTTP_NAMES: [&str; 7] = [
    "weather", "anon", "broken", "slow", "big", "notjson", "gone",
];

/// A port nothing listens on.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

/// Sends `content` as `user` and returns the run's events.
async fn run(server: &TestServer, user: &str, content: &str) -> Vec<Value> {
    let mut c = server.user(user).await;
    // Message ids are idempotency keys per user: each run gets its own.
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let id = format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let ack = c.ask_acked(&id, content, None).await;
    let run_id = ack["run_id"].as_str().expect("run_id").to_string();
    let events = c.run_events(&run_id).await;
    c.close().await;
    events
}

/// The `tool_completed` of `tool`.
fn completed<'a>(events: &'a [Value], tool: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == "tool_completed" && e["tool"] == tool)
        .unwrap_or_else(|| panic!("no tool_completed for {tool} in {events:#?}"))
}

fn error_code(events: &[Value], tool: &str) -> String {
    let done = completed(events, tool);
    assert!(done.get("result").is_none(), "{done}");
    done["error"]["code"].as_str().unwrap_or("?").to_string()
}

#[tokio::test]
async fn http_tool_gets_the_arguments_and_the_verified_user_and_nothing_of_the_client() {
    let tools = HttpTools::start().await;
    let dir = config_dir(&http_tables(&tools, &closed_port().await), &HTTP_NAMES);
    let server = TestServer::start_in(dir.path().to_str().unwrap(), &[]).await;
    let events = run(
        &server,
        "alice",
        r#"weather? [[call:weather {"city": "Paris"}]]"#,
    )
    .await;

    let kinds = types(&events);
    assert_eq!(
        kinds[..4],
        [
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "tool_completed"
        ],
        "{events:#?}"
    );
    assert_eq!(kinds.last(), Some(&"agent_completed"));
    let executing = &events[2];
    assert_eq!(executing["tool"], "weather");
    assert_eq!(executing["arguments"], json!({"city": "Paris"}));
    let done = completed(&events, "weather");
    assert_eq!(
        done["result"],
        json!({"city": "Paris", "temp_c": 21, "asked_by": "alice"}),
        "{done}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["status"], "ok", "{last}");
    assert!(
        last["message"]["content"]
            .as_str()
            .unwrap()
            .contains("temp_c"),
        "{last}"
    );

    let recorded = tools.recorded();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let request = &recorded[0];
    assert_eq!(request.path, "/weather");
    assert_eq!(request.body, json!({"city": "Paris"}));
    assert_eq!(request.header("x-portcullis-user"), Some("alice"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    // The client's token (sent in Authorization on the upgrade) never reaches a tool.
    let secret = token("alice", 600);
    for (name, value) in &request.headers {
        assert!(
            !name.eq_ignore_ascii_case("authorization") && !name.eq_ignore_ascii_case("cookie"),
            "{name} forwarded"
        );
        assert!(!value.contains(&secret[..20]), "{name} carries the token");
    }
}

#[tokio::test]
async fn http_tool_without_user_context_sends_no_user_header() {
    let tools = HttpTools::start().await;
    let dir = config_dir(&http_tables(&tools, &closed_port().await), &HTTP_NAMES);
    let server = TestServer::start_in(dir.path().to_str().unwrap(), &[]).await;
    let events = run(&server, "bob", r#"[[call:anon {"city": "Oslo"}]]"#).await;
    assert_eq!(
        completed(&events, "anon")["result"]["asked_by"],
        Value::Null
    );
    assert_eq!(tools.recorded()[0].header("x-portcullis-user"), None);
}

#[tokio::test]
async fn http_tool_failures_come_back_as_tool_errors_with_their_codes() {
    let tools = HttpTools::start().await;
    let dir = config_dir(&http_tables(&tools, &closed_port().await), &HTTP_NAMES);
    let server = TestServer::start_in(dir.path().to_str().unwrap(), &[]).await;
    let content = r#"all of them [[call:broken]] [[call:slow]] [[call:big]] [[call:notjson]] [[call:gone]] [[call:weather {"city": 5}]]"#;
    let events = run(&server, "carol", content).await;

    assert_eq!(error_code(&events, "broken"), "TOOL_HTTP_STATUS");
    assert!(
        completed(&events, "broken")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{events:#?}"
    );
    assert_eq!(error_code(&events, "slow"), "TOOL_TIMEOUT");
    assert_eq!(error_code(&events, "big"), "TOOL_RESULT_OVER_CAP");
    assert_eq!(error_code(&events, "notjson"), "TOOL_BAD_RESULT");
    assert_eq!(error_code(&events, "gone"), "TOOL_UNAVAILABLE");
    assert_eq!(error_code(&events, "weather"), "INVALID_ARGUMENTS");
    // Tool errors never end the run; the answer reports them.
    assert_eq!(events.last().unwrap()["status"], "ok");
    // Arguments that do not match `parameters` are refused before anything is sent.
    let paths: Vec<String> = tools.recorded().into_iter().map(|r| r.path).collect();
    assert!(!paths.contains(&"/weather".to_string()), "{paths:?}");
    // No error message names the tool's URL.
    for e in events.iter().filter(|e| e["type"] == "tool_completed") {
        let message = e["error"]["message"].as_str().unwrap_or("");
        assert!(!message.contains("127.0.0.1"), "{message}");
    }
}

fn mcp_table(url: &str) -> String {
    format!(
        "[tools.docs]\nkind = \"mcp\"\nurl = \"{url}\"\nallow = [\"search_docs\", \"lookup\", \"failing\", \"rpc_error\", \"slow_search\", \"get_page\"]\ntimeout_ms = 300\n"
    )
}

/// Waits until the MCP declaration `docs` has a session (or fails the test).
async fn connected(server: &TestServer) {
    let started = tokio::time::Instant::now();
    loop {
        let status = server.app().agents.mcp_status();
        if status.iter().any(|s| s.connected) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "MCP server never connected: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn mcp_tools_are_listed_at_boot_described_to_the_model_and_called() {
    let mcp = McpServer::start().await;
    let dir = config_dir(&mcp_table(&mcp.url()), &["docs"]);
    let server = TestServer::start_in(dir.path().to_str().unwrap(), &[]).await;
    connected(&server).await;

    // The agent offers the allowed tools the server lists, with the server's words.
    let agent = server.app().agents.default();
    let specs = agent.specs();
    let search = specs
        .iter()
        .find(|s| s.name == "search_docs")
        .expect("listed");
    assert_eq!(search.description, "Searches the product docs");
    assert_eq!(search.parameters["required"], json!(["query"]));
    let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
    assert!(!names.contains(&"secret_tool"), "{names:?}");
    assert!(!names.contains(&"get_page"), "not on the server: {names:?}");

    let content = r#"[[call:search_docs {"query": "install"}]] [[call:lookup]] [[call:failing]] [[call:rpc_error]] [[call:slow_search {"query": "x"}]] [[call:get_page]] [[call:secret_tool]]"#;
    let events = run(&server, "dana", content).await;
    assert_eq!(
        completed(&events, "search_docs")["result"],
        json!({"text": "2 pages match install"})
    );
    assert_eq!(
        completed(&events, "lookup")["result"],
        json!({"id": 7, "title": "Install"})
    );
    assert_eq!(error_code(&events, "failing"), "TOOL_FAILED");
    assert!(
        completed(&events, "failing")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the index is offline")
    );
    assert_eq!(error_code(&events, "rpc_error"), "TOOL_FAILED");
    assert!(
        completed(&events, "rpc_error")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("query too short")
    );
    assert_eq!(error_code(&events, "slow_search"), "TOOL_TIMEOUT");
    assert_eq!(error_code(&events, "get_page"), "TOOL_UNAVAILABLE");
    assert_eq!(error_code(&events, "secret_tool"), "TOOL_NOT_ENABLED");
    assert_eq!(events.last().unwrap()["status"], "ok");

    // `/ready` reports the server, and the allowed tool it does not have.
    let ready = server.http("GET", "/ready", &[]).await;
    assert_eq!(ready.status, 200);
    let deps = ready.json()["dependencies"].clone();
    let docs = deps
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "tools.docs")
        .unwrap_or_else(|| panic!("{deps}"))
        .clone();
    assert_eq!(docs["ok"], true, "{docs}");
    assert_eq!(docs["kind"], "mcp");
    assert_eq!(docs["detail"]["missing"], json!(["get_page"]), "{docs}");
    assert!(
        docs["error"].as_str().unwrap().contains("get_page"),
        "{docs}"
    );
}

#[tokio::test]
async fn an_mcp_server_down_at_boot_is_reported_then_used_once_it_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = config_dir(&mcp_table(&format!("http://{addr}/mcp")), &["docs"]);
    // The server listens and is ready although the MCP server is down (not required).
    let server = TestServer::start_in(dir.path().to_str().unwrap(), &[]).await;
    let ready = server.http("GET", "/ready", &[]).await;
    assert_eq!(ready.status, 200, "{:?}", ready.json());
    let events = run(&server, "erin", r#"[[call:search_docs {"query": "a"}]]"#).await;
    assert_eq!(error_code(&events, "search_docs"), "TOOL_UNAVAILABLE");
    let docs = server.app().agents.mcp_status();
    assert!(!docs[0].connected && docs[0].attempts >= 1, "{docs:?}");

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("same port");
    let _mcp = McpServer::start_on(listener).await;
    connected(&server).await;
    let events = run(&server, "erin", r#"[[call:search_docs {"query": "b"}]]"#).await;
    assert_eq!(
        completed(&events, "search_docs")["result"],
        json!({"text": "2 pages match b"})
    );
}
