//! The golden path of an `openai` agent: tool calls streamed in fragments, executed, their
//! results sent back to the model, the answer streamed, usage reported; and the exact
//! request the model received.

use serde_json::{Value, json};

use super::{API_KEY, agent, ask, start, streamed};
use crate::ws::harness::types;

fn gpt() -> String {
    agent(
        "gpt",
        "echo",
        r#"tools = ["calculator", "clock"]
system_prompt = "You are the test assistant."
max_output_tokens = 256
temperature = 0.5"#,
    )
}

#[tokio::test]
async fn fragmented_tool_calls_run_and_their_results_go_back_to_the_model() {
    let env = start("", &gpt()).await;
    let mut c = env.server.user("alice").await;
    let (_, events) = ask(&mut c, "gpt", "what is 6*7, and the time?", None).await;
    assert_eq!(
        types(&events)[..7],
        [
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "tool_completed",
            "tool_executing",
            "tool_completed",
            "agent_response"
        ],
        "{events:#?}"
    );
    assert_eq!(events[0]["agent"], "gpt");
    assert_eq!(events[1]["text"], "I will use the calculator.");
    assert_eq!(events[2]["call_id"], "call_calc");
    assert_eq!(events[2]["arguments"], json!({"expression": "6*7"}));
    assert_eq!(events[3]["result"]["value"], 42);
    assert_eq!(events[4]["tool"], "clock");
    let done = events.last().unwrap();
    assert_eq!(done["status"], "ok", "{done}");
    let answer = done["message"]["content"].as_str().unwrap();
    assert_eq!(answer, streamed(&events));
    assert!(answer.starts_with("The tools said: "), "{answer}");
    assert!(answer.contains(r#""value":42"#), "{answer}");
    // Usage summed over the two steps (12 generated tokens, then one per word).
    let usage = &done["usage"];
    assert_eq!(usage["model"], "echo");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
    let words = answer.split_inclusive(' ').count() as u64;
    assert_eq!(usage["completion_tokens"], 12 + words, "{usage}");

    // What the model received: two requests, the second carrying the tool turn.
    let requests = env.model.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bearer {API_KEY}"))
        );
        assert_eq!(r.body["model"], "echo");
        assert_eq!(r.body["stream"], true);
        assert_eq!(r.body["stream_options"], json!({"include_usage": true}));
        assert_eq!(r.body["max_tokens"], 256);
        assert_eq!(r.body["temperature"], 0.5);
        let tools: Vec<&Value> = r.body["tools"].as_array().unwrap().iter().collect();
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[0]["type"], "function");
        assert_eq!(tools[0]["function"]["name"], "calculator");
        assert!(tools[0]["function"]["parameters"]["properties"]["expression"].is_object());
    }
    let messages = requests[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(
        messages[..2],
        [
            json!({"role": "system", "content": "You are the test assistant."}),
            json!({"role": "user", "content": "what is 6*7, and the time?"}),
        ]
    );
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["content"], Value::Null);
    assert_eq!(
        messages[2]["tool_calls"],
        json!([
            {"id": "call_calc", "type": "function",
             "function": {"name": "calculator", "arguments": "{\"expression\":\"6*7\"}"}},
            {"id": "call_clock", "type": "function",
             "function": {"name": "clock", "arguments": "{}"}},
        ])
    );
    assert_eq!(messages[3]["role"], "tool");
    assert_eq!(messages[3]["tool_call_id"], "call_calc");
    let result: Value = serde_json::from_str(messages[3]["content"].as_str().unwrap()).unwrap();
    assert_eq!(result, json!({"expression": "6*7", "value": 42}));
    assert_eq!(messages[4]["tool_call_id"], "call_clock");
    assert_eq!(messages.len(), 5);
}

#[tokio::test]
async fn reasoning_becomes_agent_thinking_and_usage_reaches_metrics() {
    let env = start("", &gpt()).await;
    let mut c = env.server.user("alice").await;
    let (_, events) = ask(&mut c, "gpt", "hello there", None).await;
    assert_eq!(types(&events)[..2], ["agent_started", "agent_thinking"]);
    assert_eq!(events[1]["text"], "Thinking it over.");
    let done = events.last().unwrap();
    assert_eq!(done["message"]["content"], "You said: hello there");
    let metrics = env.server.http("GET", "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    let line = metrics
        .body
        .lines()
        .find(|l| {
            l.starts_with("portcullis_model_tokens_total")
                && l.contains(r#"agent="gpt""#)
                && l.contains(r#"model="echo""#)
                && l.contains(r#"kind="completion""#)
        })
        .unwrap_or_else(|| panic!("no completion tokens line in\n{}", metrics.body));
    assert!(line.ends_with(" 4"), "four words generated: {line}");
    assert!(!metrics.body.contains(API_KEY));
}
