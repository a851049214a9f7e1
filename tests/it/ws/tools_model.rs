//! A declared tool driven by the `openai` provider: a local server speaking the
//! chat-completions streaming format asks for the `weather` tool (arguments in fragments),
//! the gateway calls the local HTTP tool, sends the result back as a `role: "tool"`
//! message, and the model's answer is streamed to the client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::harness::{TestServer, types};
use super::tool_servers::HttpTools;
use portcullis::wire::ClientMessage;

/// The fake model: records each request body; asks for `weather` until the conversation
/// holds a tool result, then answers with the result's temperature.
struct FakeModel {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeModel {
    async fn start() -> FakeModel {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind model");
        let addr = listener.local_addr().expect("model address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let log = Arc::clone(&log);
                let service =
                    hyper::service::service_fn(move |req| complete(req, Arc::clone(&log)));
                tokio::spawn(async move {
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        FakeModel {
            addr,
            requests,
            task,
        }
    }
}

fn sse(chunks: &[Value]) -> String {
    let mut out: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    out
}

async fn complete(
    req: Request<hyper::body::Incoming>,
    log: Arc<Mutex<Vec<Value>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes());
    let body: Value = bytes
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    log.lock().expect("requests").push(body.clone());
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let tool_result = messages.iter().rev().find(|m| m["role"] == "tool");
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "fake",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let text = match tool_result {
        None => sse(&[
            chunk(
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_w", "type": "function",
                        "function": {"name": "weather", "arguments": "{\"city\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"Paris\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
        ]),
        Some(result) => {
            let content: Value = serde_json::from_str(result["content"].as_str().unwrap_or("null"))
                .unwrap_or_default();
            sse(&[
                chunk(
                    json!({"role": "assistant", "content": "It is "}),
                    Value::Null,
                ),
                chunk(
                    json!({"content": format!("{} C in Paris.", content["temp_c"])}),
                    Value::Null,
                ),
                chunk(json!({}), json!("stop")),
            ])
        }
    };
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(Full::new(Bytes::from(text)))
        .expect("response"))
}

#[tokio::test]
async fn an_openai_agent_calls_a_declared_http_tool_and_answers_from_its_result() {
    let tools = HttpTools::start().await;
    let model = FakeModel::start().await;
    let extra = format!(
        r#"
[services.model]
kind = "openai"
url = "http://{}/v1"
api_key = "test-model-key"

[components.agent_registry]
needs = ["model"]

[[agents]]
name = "modelled"
provider = "openai"
service = "model"
model = "fake"
tools = ["weather"]

[tools.weather]
kind = "http"
url = "{}"
description = "Current weather for a city"
parameters = {{ type = "object", properties = {{ city = {{ type = "string" }} }}, required = ["city"] }}
"#,
        model.addr,
        tools.url("/weather")
    );
    let dir = tempfile::tempdir().expect("config dir");
    let base = std::fs::read_to_string("environments/base.toml").expect("base.toml");
    let test = std::fs::read_to_string("environments/test.toml").expect("test.toml");
    // The [[agents]] above joins the test agent; tables after it would belong to it.
    let (head, client) = test.split_once("[client]").expect("test.toml has [client]");
    let test = format!("{head}{extra}\n[client]{client}");
    std::fs::write(dir.path().join("base.toml"), base).expect("write base");
    std::fs::write(dir.path().join("test.toml"), test).expect("write test");
    let server = TestServer::start_in(dir.path().to_str().unwrap(), &[]).await;

    let mut c = server.user("frank").await;
    c.send_msg(ClientMessage::user_message(
        "w1",
        "Weather in Paris?",
        None,
        Some("modelled"),
    ))
    .await;
    let ack = c.recv_type("ack").await;
    let events = c.run_events(ack["run_id"].as_str().unwrap()).await;
    let kinds = types(&events);
    assert_eq!(
        kinds[..3],
        ["agent_started", "tool_executing", "tool_completed"],
        "{events:#?}"
    );
    assert_eq!(events[1]["tool"], "weather");
    assert_eq!(events[1]["arguments"], json!({"city": "Paris"}));
    assert_eq!(events[2]["result"]["asked_by"], "frank", "{}", events[2]);
    let last = events.last().unwrap();
    assert_eq!(last["status"], "ok", "{last}");
    assert_eq!(last["message"]["content"], "It is 21 C in Paris.");

    // The model was told about the tool, and got its result back by call id.
    let requests = model.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(
        requests[0]["tools"],
        json!([{"type": "function", "function": {
            "name": "weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }}])
    );
    let tool_message = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("a tool message")
        .clone();
    assert_eq!(tool_message["tool_call_id"], "call_w");
    let result: Value = serde_json::from_str(tool_message["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["temp_c"], 21);
    assert_eq!(
        tools.recorded()[0].header("x-portcullis-user"),
        Some("frank")
    );
}
