//! An `openai` agent whose model misbehaves: rate limits (retried, `Retry-After`
//! honoured), 500s (retried, then the fallback agent), a stream cut midway, a malformed
//! chunk, the token limit, a slow stream cancelled or timed out (the HTTP stream closed at
//! once), and a 500-delta answer to a client that reads promptly.

use std::time::{Duration, Instant};

use super::{agent, ask, start, streamed};
use crate::ws::harness::Client;
use portcullis::wire::ClientMessage;

/// The run's `agent_completed`.
fn end(events: &[serde_json::Value]) -> &serde_json::Value {
    events.last().unwrap()
}

/// The stored answer of the thread's last run.
async fn stored_answer(env: &super::Env, thread: &str) -> String {
    let store = env.server.app().store.get().expect("store");
    let messages = store
        .thread_messages("alice", thread)
        .await
        .expect("messages");
    let last = messages.last().expect("a message");
    assert_eq!(last.role, "assistant");
    last.content.clone()
}

#[tokio::test]
async fn rate_limited_then_answered_after_the_retry_after_wait() {
    let env = start("max_retries = 2", &agent("gpt", "429:1:1", "")).await;
    let mut c = env.server.user("alice").await;
    let started = Instant::now();
    let (_, events) = ask(&mut c, "gpt", "hello", None).await;
    assert_eq!(end(&events)["status"], "ok", "{events:#?}");
    assert_eq!(end(&events)["message"]["content"], "You said: hello");
    assert_eq!(env.model.requests().len(), 2, "one 429, one answer");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
}

#[tokio::test]
async fn rate_limited_beyond_the_retries_ends_model_rate_limited() {
    let env = start("max_retries = 1", &agent("gpt", "429:5:0", "")).await;
    let mut c = env.server.user("alice").await;
    let (_, events) = ask(&mut c, "gpt", "hello", None).await;
    assert_eq!(end(&events)["status"], "error");
    assert_eq!(end(&events)["error"]["code"], "MODEL_RATE_LIMITED");
    assert_eq!(env.model.requests().len(), 2);
}

#[tokio::test]
async fn a_model_failing_with_500s_hands_the_step_to_the_fallback_agent() {
    let agents = format!(
        "{}{}",
        agent("primary", "500", "fallback = \"backup\""),
        agent("backup", "echo", "")
    );
    let env = start("max_retries = 1", &agents).await;
    let mut c = env.server.user("alice").await;
    let (_, events) = ask(&mut c, "primary", "hello", None).await;
    assert_eq!(events[0]["agent"], "primary");
    assert_eq!(end(&events)["status"], "ok", "{events:#?}");
    assert_eq!(end(&events)["message"]["content"], "You said: hello");
    assert_eq!(end(&events)["usage"]["model"], "echo");
    let models: Vec<String> = env
        .model
        .requests()
        .iter()
        .map(|r| r.body["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        models,
        ["500", "500", "echo"],
        "two tries, then the fallback"
    );
    // Without a fallback the run ends with the model's code and the server's words.
    let (_, events) = ask(&mut c, "backup", "x", None).await;
    assert_eq!(end(&events)["status"], "ok");
    let env = start("max_retries = 0", &agent("gpt", "500", "")).await;
    let mut c = env.server.user("alice").await;
    let (_, events) = ask(&mut c, "gpt", "hello", None).await;
    assert_eq!(end(&events)["error"]["code"], "MODEL_UNAVAILABLE");
    let message = end(&events)["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("HTTP 500") && message.contains("overloaded"),
        "{message}"
    );
    assert!(!message.contains(super::API_KEY));
}

#[tokio::test]
async fn a_refusal_that_quotes_the_api_key_reaches_the_user_without_it() {
    let env = start("max_retries = 0", &agent("gpt", "401", "")).await;
    let mut c = env.server.user("alice").await;
    let (_, events) = ask(&mut c, "gpt", "hello", None).await;
    assert_eq!(end(&events)["error"]["code"], "MODEL_REQUEST_REFUSED");
    let message = end(&events)["error"]["message"].as_str().unwrap();
    assert!(message.contains("HTTP 401"), "{message}");
    assert!(
        message.contains("Incorrect API key provided: [api key]"),
        "{message}"
    );
    assert!(!message.contains(super::API_KEY), "{message}");
}

#[tokio::test]
async fn a_stream_cut_midway_ends_model_stream_broken_with_the_partial_answer_stored() {
    let env = start("", &agent("gpt", "cut", "")).await;
    let mut c = env.server.user("alice").await;
    let (ack, events) = ask(&mut c, "gpt", "hello", None).await;
    assert_eq!(end(&events)["status"], "error");
    assert_eq!(end(&events)["error"]["code"], "MODEL_STREAM_BROKEN");
    assert_eq!(streamed(&events), "Hello from a ");
    assert_eq!(end(&events)["message"]["content"], "Hello from a ");
    let thread = ack["thread_id"].as_str().unwrap();
    assert_eq!(stored_answer(&env, thread).await, "Hello from a ");
}

#[tokio::test]
async fn a_malformed_chunk_ends_model_bad_response_and_the_token_limit_model_output_limit() {
    let agents = format!(
        "{}{}",
        agent("bad", "malformed", ""),
        agent("short", "length", "")
    );
    let env = start("", &agents).await;
    let mut c = env.server.user("alice").await;
    let (_, events) = ask(&mut c, "bad", "hello", None).await;
    assert_eq!(end(&events)["error"]["code"], "MODEL_BAD_RESPONSE");
    assert_eq!(end(&events)["message"]["content"], "Hello ");
    let (_, events) = ask(&mut c, "short", "hello", None).await;
    assert_eq!(end(&events)["error"]["code"], "MODEL_OUTPUT_LIMIT");
    assert_eq!(end(&events)["message"]["content"], "Cut short");
}

/// Waits until the fake model saw `n` clients go away mid-stream.
async fn disconnects(env: &super::Env, n: usize) {
    let started = Instant::now();
    while env.model.disconnects() < n {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the model's stream was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn first_delta_then(c: &mut Client, run_id: &str) {
    loop {
        let v = c.recv().await;
        assert_eq!(v["run_id"], run_id);
        if v["type"] == "agent_response" {
            return;
        }
    }
}

#[tokio::test]
async fn cancel_and_the_run_timeout_close_the_model_stream() {
    let agents = format!(
        "{}{}",
        agent("slow", "slow:40", ""),
        agent("late", "slow:40", "run_timeout_ms = 400")
    );
    let env = start("", &agents).await;
    let mut c = env.server.user("alice").await;
    c.send_msg(ClientMessage::user_message("m1", "hi", None, Some("slow")))
        .await;
    let ack = c.recv_type("ack").await;
    let run_id = ack["run_id"].as_str().unwrap().to_string();
    first_delta_then(&mut c, &run_id).await;
    c.send_msg(ClientMessage::cancel(&run_id)).await;
    let done = loop {
        let v = c.recv().await;
        if v["type"] == "agent_completed" {
            break v;
        }
    };
    assert_eq!(done["status"], "cancelled");
    assert!(!done["message"]["content"].as_str().unwrap().is_empty());
    disconnects(&env, 1).await;

    let (_, events) = ask(&mut c, "late", "hi", None).await;
    assert_eq!(end(&events)["status"], "timeout");
    assert_eq!(end(&events)["error"]["code"], "RUN_TIMEOUT");
    disconnects(&env, 2).await;
}

#[tokio::test]
async fn a_500_delta_answer_reaches_a_prompt_client_whole() {
    let env = start("", &agent("gpt", "deltas:500", "")).await;
    let mut c = env.server.user("alice").await;
    let (_, events) = ask(&mut c, "gpt", "go", None).await;
    assert_eq!(end(&events)["status"], "ok");
    let want: String = (0..500).map(|i| format!("w{i} ")).collect();
    assert_eq!(streamed(&events), want);
    assert_eq!(end(&events)["message"]["content"], want);
    assert_eq!(end(&events)["usage"]["completion_tokens"], 500);
    // The client is still connected, never judged a slow consumer (4509).
    c.ping_pong().await;
    assert_eq!(env.server.app().metrics.slow_consumers.get(), 0);
}
