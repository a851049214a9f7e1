//! Runs that end in `error`: a provider that never answers (`MAX_STEPS`), a provider
//! failure (its own code, e.g. `MODEL_UNAVAILABLE`) and a failing event sink (`STORAGE_UNAVAILABLE`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use serde_json::json;

use super::super::*;
use super::{ALL_TOOLS, assert_invariants, helper, run_scripted};
use crate::agent::testkit::{RecordingSink, ctx, fixed_clock};
use crate::agent::{Limits, Provider};

/// Asks for the calculator on every step and counts the steps; optionally fails instead.
struct Stubborn {
    steps: AtomicUsize,
    fail: bool,
}

impl Provider for Stubborn {
    fn kind(&self) -> &'static str {
        "stubborn"
    }

    fn stream<'a>(&'a self, _: ProviderRequest<'a>) -> BoxStream<'a, Result<Chunk, ProviderError>> {
        let step = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        let last = match self.fail {
            true => Err(ProviderError::new(
                codes::MODEL_UNAVAILABLE,
                "HTTP 502 from the model",
            )),
            false => Ok(Chunk::ToolCall(ToolCall {
                call_id: format!("call_{step}"),
                name: "calculator".into(),
                arguments: json!({"expression": "1+1"}),
            })),
        };
        stream::iter([Ok(Chunk::Thinking(format!("step {step}"))), last]).boxed()
    }
}

fn stubborn(fail: bool, max_steps: u32) -> (Arc<Stubborn>, Agent) {
    let provider = Arc::new(Stubborn {
        steps: AtomicUsize::new(0),
        fail,
    });
    let calculator = crate::agent::tools::builtin("calculator", &fixed_clock()).unwrap();
    let limits = Limits {
        max_steps,
        run_timeout: Duration::from_secs(60),
        tool_timeout: Duration::from_secs(2),
    };
    let agent = Agent::new("stubborn", provider.clone(), vec![calculator], limits);
    (provider, agent)
}

#[tokio::test]
async fn max_steps_ends_a_provider_that_never_answers() {
    let (provider, agent) = stubborn(false, 3);
    let (outcome, events) = run_scripted(&agent, "anything").await;
    assert_eq!(provider.steps.load(Ordering::SeqCst), 3);
    let executed = events
        .iter()
        .filter(|e| e.kind() == "tool_executing")
        .count();
    assert_eq!(executed, 2, "the last step's calls are not executed");
    assert_eq!(outcome.status, RunStatus::Error);
    assert_eq!(outcome.error.unwrap().code, codes::MAX_STEPS);
}

#[tokio::test]
async fn a_provider_error_ends_the_run_with_its_code() {
    let (_, agent) = stubborn(true, 3);
    let (outcome, events) = run_scripted(&agent, "anything").await;
    assert_eq!(events.len(), 3, "started, thinking, completed: {events:#?}");
    assert_eq!(outcome.status, RunStatus::Error);
    let error = outcome.error.unwrap();
    assert_eq!(error.code, codes::MODEL_UNAVAILABLE);
    assert!(error.message.contains("HTTP 502"));
}

#[tokio::test]
async fn a_failing_sink_stops_the_run_and_still_gets_one_completed_attempt() {
    // Attempts: 0 started, 1 thinking, 2 tool_executing (refused).
    let (provider, agent) = stubborn(false, 5);
    let sink = RecordingSink {
        fail_from: Some(2),
        ..RecordingSink::default()
    };
    let outcome = run(&agent, &ctx("anything"), &sink).await;
    assert_invariants(&sink.events());
    assert_eq!(
        sink.kinds(),
        [
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "agent_completed"
        ]
    );
    assert_eq!(
        provider.steps.load(Ordering::SeqCst),
        1,
        "no provider call after the failure"
    );
    assert_eq!(outcome.status, RunStatus::Error);
    assert_eq!(
        outcome.error.as_ref().unwrap().code,
        codes::STORAGE_UNAVAILABLE
    );
    assert!(!outcome.completion_stored);
    assert_eq!(sink.events().last(), Some(&outcome.completed_event()));
}

#[tokio::test]
async fn a_refused_start_means_no_provider_call_at_all() {
    let (provider, agent) = stubborn(false, 5);
    let sink = RecordingSink {
        fail_from: Some(0),
        ..RecordingSink::default()
    };
    let outcome = run(&agent, &ctx("anything"), &sink).await;
    assert_eq!(sink.kinds(), ["agent_started", "agent_completed"]);
    assert_eq!(provider.steps.load(Ordering::SeqCst), 0);
    assert_eq!(outcome.error.unwrap().code, codes::STORAGE_UNAVAILABLE);
}

#[tokio::test]
async fn a_refused_completion_is_returned_for_direct_delivery() {
    let agent = helper(ALL_TOOLS);
    let (_, all) = run_scripted(&agent, "hello").await;
    let sink = RecordingSink {
        fail_from: Some(all.len() - 1),
        ..RecordingSink::default()
    };
    let outcome = run(&agent, &ctx("hello"), &sink).await;
    assert_eq!(sink.events(), all, "only the completion was refused");
    assert_eq!(outcome.status, RunStatus::Ok);
    assert!(!outcome.completion_stored);
}
