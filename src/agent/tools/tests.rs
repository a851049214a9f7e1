//! Tests of the built-in tools called directly, without a provider.

use serde_json::json;

use super::*;
use crate::agent::testkit::{FakeHistory, ctx, ctx_with_history, fixed_clock};

fn tool(name: &str) -> Arc<dyn Tool> {
    builtin(name, &fixed_clock()).expect(name)
}

#[tokio::test]
async fn calculator_returns_the_real_value() {
    let c = ctx("");
    let calc = tool("calculator");
    let out = calc.call(json!({"expression": "2+3*4"}), &c).await;
    assert_eq!(out, Ok(json!({"expression": "2+3*4", "value": 14})));
    let out = calc.call(json!({"expression": "7/2"}), &c).await;
    assert_eq!(out, Ok(json!({"expression": "7/2", "value": 3.5})));
    let err = calc
        .call(json!({"expression": "1/0"}), &c)
        .await
        .unwrap_err();
    assert_eq!(err.code, "DIVISION_BY_ZERO");
    let err = calc.call(json!({"expr": "1"}), &c).await.unwrap_err();
    assert_eq!(err.code, codes::INVALID_ARGUMENTS);
}

#[tokio::test]
async fn clock_reads_the_injected_clock() {
    let out = tool("clock").call(json!({}), &ctx("")).await;
    assert_eq!(out, Ok(json!({"now": "2026-11-22T00:00:00Z"})));
}

#[tokio::test]
async fn thread_history_reads_the_run_context_and_caps_the_limit() {
    let messages: Vec<(String, String)> = (0..60)
        .map(|i| ("user".to_string(), format!("message {i}")))
        .collect();
    let c = ctx_with_history("", FakeHistory(Ok(messages)));
    let out = tool("thread_history")
        .call(json!({"limit": 1000}), &c)
        .await
        .unwrap();
    let listed = out["messages"].as_array().unwrap();
    assert_eq!(listed.len(), HISTORY_LIMIT_MAX);
    assert_eq!(
        listed.last().unwrap(),
        &json!({"role": "user", "content": "message 59"})
    );

    let out = tool("thread_history").call(json!({}), &c).await.unwrap();
    assert_eq!(out["messages"].as_array().unwrap().len(), 10);

    let broken = ctx_with_history("", FakeHistory(Err("store unavailable".into())));
    let err = tool("thread_history")
        .call(json!({}), &broken)
        .await
        .unwrap_err();
    assert_eq!(err, ErrorInfo::new(codes::TOOL_FAILED, "store unavailable"));
}

#[test]
fn only_the_documented_tools_are_built_in() {
    for name in BUILTIN_TOOLS {
        assert_eq!(tool(name).spec().name, name);
    }
    assert!(builtin("shell", &fixed_clock()).is_none());
    let hooks: Vec<_> = test_hooks().iter().map(|t| t.spec().name).collect();
    assert_eq!(hooks, [FAIL_TOOL, SLOW_TOOL]);
}
