//! Run-loop tests: event order, exactly one `Completed`, and every way a run can end.
//! Time-dependent tests run on paused tokio time, so they take no real time. Failures of
//! the provider, the step cap and the sink are in [`failures`].

mod bounds;
mod failures;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::agent::Registry;
use crate::agent::testkit::{FakeHistory, RecordingSink, ctx, ctx_with_history, fixed_clock};
use crate::config::{AgentConfig, ProviderConfig};

pub(super) const ALL_TOOLS: &[&str] = &["calculator", "clock", "thread_history"];

fn scripted(tools: &[&str], run_timeout: Duration, tool_timeout: Duration) -> Arc<Agent> {
    let config = AgentConfig {
        name: "helper".into(),
        provider: ProviderConfig::Scripted,
        tools: tools.iter().map(ToString::to_string).collect(),
        default: true,
        max_steps: 4,
        run_timeout,
        tool_timeout,
        ..AgentConfig::default()
    };
    Registry::with_clock(&[config], fixed_clock())
        .unwrap()
        .default()
}

pub(super) fn helper(tools: &[&str]) -> Arc<Agent> {
    scripted(tools, Duration::from_secs(60), Duration::from_secs(2))
}

/// The protocol invariants every run must keep, whatever else a test checks.
pub(super) fn assert_invariants(events: &[AgentEvent]) {
    assert!(
        matches!(events.first(), Some(AgentEvent::Started { .. })),
        "{events:#?}"
    );
    let completed = events
        .iter()
        .filter(|e| e.kind() == "agent_completed")
        .count();
    assert_eq!(completed, 1, "exactly one Completed: {events:#?}");
    assert_eq!(
        events.last().unwrap().kind(),
        "agent_completed",
        "{events:#?}"
    );
    let mut open: Option<&str> = None;
    for event in events {
        match event {
            AgentEvent::ToolExecuting { call_id, .. } => {
                assert!(open.is_none(), "tool calls run one at a time");
                open = Some(call_id);
            }
            AgentEvent::ToolCompleted { call_id, .. } => {
                assert_eq!(open.take(), Some(call_id.as_str()));
            }
            _ => {}
        }
    }
}

/// The single tool outcome of a run.
pub(super) fn tool_outcome(events: &[AgentEvent]) -> (String, Result<Value, ErrorInfo>, u64) {
    let mut outcomes = events.iter().filter_map(|e| match e {
        AgentEvent::ToolCompleted {
            tool,
            outcome,
            duration_ms,
            ..
        } => Some((tool.clone(), outcome.clone(), *duration_ms)),
        _ => None,
    });
    let first = outcomes.next().expect("a tool ran");
    assert!(outcomes.next().is_none(), "only one tool ran");
    first
}

pub(super) async fn run_scripted(agent: &Agent, content: &str) -> (RunOutcome, Vec<AgentEvent>) {
    let sink = RecordingSink::default();
    let outcome = run(agent, &ctx(content), &sink).await;
    let events = sink.events();
    assert_invariants(&events);
    (outcome, events)
}

#[tokio::test]
async fn calculator_run_streams_the_real_value() {
    let agent = helper(ALL_TOOLS);
    let sink = RecordingSink::default();
    let outcome = run(&agent, &ctx("what is 2+3*4?"), &sink).await;
    let events = sink.events();
    assert_invariants(&events);
    let kinds = sink.kinds();
    assert_eq!(
        kinds[..5],
        [
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "tool_completed",
            "agent_response"
        ]
    );
    assert!(
        kinds[4..kinds.len() - 1]
            .iter()
            .all(|k| *k == "agent_response")
    );
    assert_eq!(
        events[2],
        AgentEvent::ToolExecuting {
            call_id: "call_1".into(),
            tool: "calculator".into(),
            arguments: json!({"expression": "2+3*4"}),
        }
    );
    assert_eq!(
        tool_outcome(&events).1,
        Ok(json!({"expression": "2+3*4", "value": 14}))
    );
    assert_eq!(outcome.status, RunStatus::Ok);
    assert_eq!(outcome.content, "2+3*4 = 14.");
    assert!(outcome.completion_stored);
    assert_eq!(events.last(), Some(&outcome.completed_event()));
    let body = events.last().unwrap().to_body("m_assistant");
    assert_eq!(
        body["message"],
        json!({"id": "m_assistant", "content": "2+3*4 = 14."})
    );
}

#[tokio::test]
async fn calculator_handles_decimals_powers_and_division_by_zero() {
    let agent = helper(&["calculator"]);
    for (question, answer) in [
        ("(1.5+2.5)/4", "(1.5+2.5)/4 = 1."),
        ("what is 2^10", "2^10 = 1024."),
    ] {
        let (outcome, _) = run_scripted(&agent, question).await;
        assert_eq!(
            (outcome.status, outcome.content.as_str()),
            (RunStatus::Ok, answer)
        );
    }
    let (outcome, events) = run_scripted(&agent, "what is 1/0?").await;
    let (_, result, _) = tool_outcome(&events);
    assert_eq!(result.unwrap_err().code, "DIVISION_BY_ZERO");
    // A failing tool never fails the run; the provider explains the error instead.
    assert_eq!(outcome.status, RunStatus::Ok);
    assert_eq!(
        outcome.content,
        "I could not evaluate `1/0`: division by zero (DIVISION_BY_ZERO)."
    );
}

#[tokio::test]
async fn clock_run_uses_the_injected_clock() {
    let (outcome, events) = run_scripted(&helper(&["clock"]), "what time is it?").await;
    assert_eq!(
        tool_outcome(&events).1,
        Ok(json!({"now": "2026-11-22T00:00:00Z"}))
    );
    assert_eq!(
        outcome.content,
        "The current time is 2026-11-22T00:00:00Z (UTC)."
    );
}

#[tokio::test]
async fn thread_history_run_reads_only_the_supplied_history() {
    let history = FakeHistory(Ok(vec![
        ("user".into(), "my cat is Tom".into()),
        ("assistant".into(), "Nice.".into()),
    ]));
    let sink = RecordingSink::default();
    let outcome = run(
        &helper(ALL_TOOLS),
        &ctx_with_history("what did I say earlier?", history),
        &sink,
    )
    .await;
    assert_invariants(&sink.events());
    assert_eq!(tool_outcome(&sink.events()).0, "thread_history");
    assert_eq!(
        outcome.content,
        "Earlier in this thread you wrote: \"my cat is Tom\"."
    );
}

#[tokio::test]
async fn a_tool_that_is_not_enabled_is_named_in_the_answer() {
    let (outcome, events) = run_scripted(&helper(&["clock"]), "what is 6*7?").await;
    assert!(events.iter().all(|e| e.kind() != "tool_executing"));
    assert_eq!(outcome.status, RunStatus::Ok);
    assert_eq!(
        outcome.content,
        "I would evaluate `6*7`, but the `calculator` tool is not enabled for this agent."
    );
}

#[tokio::test]
async fn a_failing_tool_is_reported_and_explained() {
    let (outcome, events) = run_scripted(&helper(&[]), "please [[fail_tool]]").await;
    let (tool, result, _) = tool_outcome(&events);
    assert_eq!(tool, "fail_tool");
    assert_eq!(result.unwrap_err().code, codes::TOOL_FAILED);
    assert_eq!(outcome.status, RunStatus::Ok);
    assert!(
        outcome.content.starts_with("The `fail_tool` tool failed:"),
        "{}",
        outcome.content
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_tool_times_out_without_killing_the_run() {
    let agent = scripted(&[], Duration::from_secs(60), Duration::from_millis(1500));
    let started = Instant::now();
    let (outcome, events) = run_scripted(&agent, "[[slow_tool]]").await;
    let (_, result, duration_ms) = tool_outcome(&events);
    assert_eq!(result.unwrap_err().code, codes::TOOL_TIMEOUT);
    assert_eq!(duration_ms, 1500);
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    assert_eq!(outcome.status, RunStatus::Ok);
    assert!(
        outcome.content.contains("TOOL_TIMEOUT"),
        "{}",
        outcome.content
    );
}

#[tokio::test(start_paused = true)]
async fn the_run_timeout_ends_a_slow_run_mid_stream() {
    // Chunks arrive at 400 ms (thinking), 800 ms (tool call) and 1200 ms (end of step).
    let agent = scripted(ALL_TOOLS, Duration::from_secs(1), Duration::from_secs(2));
    let started = Instant::now();
    let (outcome, events) = run_scripted(&agent, "what is 1+1 [[slow:400]]").await;
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    let kinds: Vec<_> = events.iter().map(AgentEvent::kind).collect();
    assert_eq!(
        kinds,
        ["agent_started", "agent_thinking", "agent_completed"]
    );
    assert_eq!(outcome.status, RunStatus::Timeout);
    assert_eq!(outcome.error.unwrap().code, codes::RUN_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_spawned_run_ends_it_cancelled_with_the_partial_answer() {
    let agent = helper(ALL_TOOLS);
    let context = ctx("hello there [[slow:400]]");
    let cancel = context.cancel.clone();
    let sink = Arc::new(RecordingSink::default());
    let task = {
        let sink = Arc::clone(&sink);
        tokio::spawn(async move { run(&agent, &context, &*sink).await })
    };
    // Thinking at 400 ms, the first delta at 800 ms, the second would come at 1200 ms.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cancel.cancel();
    let outcome = task.await.unwrap();
    let events = sink.events();
    assert_invariants(&events);
    let kinds: Vec<_> = events.iter().map(AgentEvent::kind).collect();
    assert_eq!(
        kinds,
        [
            "agent_started",
            "agent_thinking",
            "agent_response",
            "agent_completed"
        ]
    );
    assert_eq!(outcome.status, RunStatus::Cancelled);
    assert_eq!(outcome.content, "You said: \"hello there\". ");
    assert_eq!(outcome.error, None);
}

#[tokio::test]
async fn a_token_cancelled_during_an_emit_stops_the_run_at_once() {
    let context = ctx("what is 1+1");
    let sink = RecordingSink {
        cancel_after: Some(("agent_thinking", context.cancel.clone())),
        ..RecordingSink::default()
    };
    let outcome = run(&helper(ALL_TOOLS), &context, &sink).await;
    assert_invariants(&sink.events());
    assert_eq!(
        sink.kinds(),
        ["agent_started", "agent_thinking", "agent_completed"]
    );
    assert_eq!(outcome.status, RunStatus::Cancelled);
}

#[tokio::test]
async fn a_run_cancelled_before_it_starts_still_starts_and_completes() {
    let context = ctx("what is 1+1");
    context.cancel.cancel();
    let sink = RecordingSink::default();
    let outcome = run(&helper(ALL_TOOLS), &context, &sink).await;
    assert_eq!(sink.kinds(), ["agent_started", "agent_completed"]);
    assert_eq!(outcome.status, RunStatus::Cancelled);
}

/// A sink may hold events until `flush`; the runner flushes before every wait, so a held
/// event never waits for the provider or a tool, and not otherwise, so a run whose steps
/// are all ready at once stores its events together.
#[tokio::test(start_paused = true)]
async fn the_sink_is_flushed_before_every_wait_and_only_then() {
    let agent = helper(ALL_TOOLS);
    // Nothing to wait for: one flush, after the last step, before the completion.
    let sink = RecordingSink::default();
    let outcome = run(&agent, &ctx("what is 12*(3+4)?"), &sink).await;
    assert_eq!(outcome.status, RunStatus::Ok);
    let offered = sink.events().len();
    assert_eq!(*sink.flushes.lock().unwrap(), [offered - 1]);

    // Each chunk 100 ms apart: everything emitted so far is flushed before each wait.
    let sink = RecordingSink::default();
    let outcome = run(&agent, &ctx("what is 12*(3+4)? [[slow:100]]"), &sink).await;
    assert_eq!(outcome.status, RunStatus::Ok);
    let kinds = sink.kinds();
    let flushes = sink.flushes.lock().unwrap().clone();
    assert_eq!(
        flushes.first(),
        Some(&1),
        "agent_started waits for no chunk: {flushes:?}"
    );
    assert!(flushes.windows(2).all(|w| w[0] <= w[1]), "{flushes:?}");
    // Every event but the completion was flushed before the run went on waiting or ended.
    assert_eq!(
        flushes.last(),
        Some(&(kinds.len() - 1)),
        "{kinds:?} {flushes:?}"
    );
    for (i, kind) in kinds.iter().enumerate().take(kinds.len() - 1) {
        assert!(
            flushes.iter().any(|&f| f > i),
            "{kind} was never flushed: {flushes:?}"
        );
    }
}

/// A flush that fails ends the run with `error`, like a failed emit: the client is not
/// told `ok` about a run whose events were not stored.
#[tokio::test]
async fn a_failed_flush_ends_the_run_with_a_storage_error() {
    let sink = RecordingSink {
        fail_flush: true,
        ..RecordingSink::default()
    };
    let outcome = run(&helper(ALL_TOOLS), &ctx("what is 1+1?"), &sink).await;
    assert_eq!(outcome.status, RunStatus::Error);
    assert_eq!(outcome.error.unwrap().code, codes::STORAGE_UNAVAILABLE);
    assert_invariants(&sink.events());
}
