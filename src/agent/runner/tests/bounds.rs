//! The bounds of a run (issue 13): an answer, an event count or a tool result past the
//! agent's limit ends the run `error` with its own code, and what was produced before it
//! is kept.

use super::super::*;
use super::{ALL_TOOLS, helper, run_scripted, tool_outcome};
use crate::agent::testkit::{FakeHistory, RecordingSink, ctx_with_history};
use crate::config::RunBounds;

fn bounded(bounds: RunBounds) -> Agent {
    let agent = std::sync::Arc::into_inner(helper(ALL_TOOLS)).expect("one owner");
    agent.with_bounds(bounds)
}

#[tokio::test]
async fn an_answer_past_max_answer_bytes_ends_the_run_with_the_answer_so_far() {
    let agent = bounded(RunBounds {
        max_answer_bytes: 40,
        ..RunBounds::default()
    });
    let (outcome, events) = run_scripted(&agent, "tell me a story about a long road").await;
    assert_eq!(outcome.status, RunStatus::Error);
    assert_eq!(outcome.error.unwrap().code, codes::ANSWER_TOO_LONG);
    assert_eq!(outcome.content.len(), 40, "{:?}", outcome.content);
    assert!(outcome.content.starts_with("You said: \"tell me a story"));
    let streamed: String = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ResponseDelta { delta } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        streamed, outcome.content,
        "the client got exactly the kept answer"
    );
}

#[tokio::test]
async fn a_run_past_max_run_events_ends_with_too_many_events() {
    let agent = bounded(RunBounds {
        max_run_events: 5,
        ..RunBounds::default()
    });
    let (outcome, events) = run_scripted(&agent, "tell me a story about a long road").await;
    assert_eq!(events.len(), 5, "{events:#?}");
    assert_eq!(outcome.status, RunStatus::Error);
    assert_eq!(outcome.error.unwrap().code, codes::TOO_MANY_EVENTS);
    assert!(!outcome.content.is_empty(), "the deltas sent are kept");
}

#[tokio::test]
async fn a_tool_result_past_max_tool_result_bytes_is_never_stored_and_ends_the_run() {
    let agent = bounded(RunBounds {
        max_tool_result_bytes: 300,
        ..RunBounds::default()
    });
    let long = "x".repeat(400);
    let history = FakeHistory(Ok(vec![("user".into(), long.clone())]));
    let sink = RecordingSink::default();
    let outcome = run(
        &agent,
        &ctx_with_history("what did I say earlier?", history),
        &sink,
    )
    .await;
    let events = sink.events();
    super::assert_invariants(&events);
    let (tool, result, _) = tool_outcome(&events);
    assert_eq!(tool, "thread_history");
    assert_eq!(result.unwrap_err().code, codes::TOOL_RESULT_TOO_LARGE);
    assert!(
        !format!("{events:?}").contains(&long),
        "the oversized result is nowhere in the events"
    );
    assert_eq!(outcome.status, RunStatus::Error);
    assert_eq!(outcome.error.unwrap().code, codes::TOOL_RESULT_TOO_LARGE);
}
