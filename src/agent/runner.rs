//! The run loop: ask the provider, stream its events, execute its tool calls, feed the
//! results back, until it answers, fails, runs out of steps, times out or is cancelled.
//!
//! Whatever happens, a run emits `Started` first and exactly one `Completed` last, and
//! nothing after it. Cancellation and the whole-run timeout work by dropping the step
//! future at its next await point, which is why providers and tools must be cancel-safe
//! (drop aborts them) and why the answer text lives outside that future. A step whose
//! awaits are all ready never reaches such a point, so every event also passes a gate that
//! checks the token and the deadline first.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use thiserror::Error;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::Agent;
use super::context::RunContext;
use super::event::{AgentEvent, ErrorInfo, EventSink, RunStatus, SinkError, codes};
use super::provider::{ChatMessage, Chunk, ProviderError, ProviderRequest, ToolCall};

/// How a run ended, returned so the caller can deliver the completion to the user's
/// sockets even when storing it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// Final status.
    pub status: RunStatus,
    /// The answer (all deltas streamed, also partial ones on error or cancellation).
    pub content: String,
    /// Why, when the status is not `ok`.
    pub error: Option<ErrorInfo>,
    /// Whether the sink accepted the `Completed` event.
    pub completion_stored: bool,
}

impl RunOutcome {
    /// The `Completed` event the run emitted (or tried to).
    pub fn completed_event(&self) -> AgentEvent {
        AgentEvent::Completed {
            status: self.status,
            content: self.content.clone(),
            error: self.error.clone(),
        }
    }
}

/// Why the step loop stopped early.
#[derive(Debug, Error)]
enum StepError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the agent still wanted tools after {0} steps")]
    MaxSteps(u32),
    #[error("the run was cancelled")]
    Cancelled,
    #[error("the run exceeded {} ms", .0.as_millis())]
    TimedOut(Duration),
}

impl StepError {
    /// The status and error of the `Completed` this ends the run with.
    fn end(self) -> (RunStatus, Option<ErrorInfo>) {
        let (status, code) = match self {
            Self::Sink(_) => (RunStatus::Error, codes::STORAGE_UNAVAILABLE),
            Self::Provider(_) => (RunStatus::Error, codes::PROVIDER_ERROR),
            Self::MaxSteps(_) => (RunStatus::Error, codes::MAX_STEPS),
            Self::Cancelled => return (RunStatus::Cancelled, None),
            Self::TimedOut(_) => (RunStatus::Timeout, codes::RUN_TIMEOUT),
        };
        (status, Some(ErrorInfo::new(code, self.to_string())))
    }
}

/// The sink as the step loop sees it: every event first checks that the run may still
/// emit, because a step whose awaits are all ready never yields to the `select!` in
/// [`run`], so that check alone would let events follow a fired token.
struct Gate<'a, S> {
    sink: &'a S,
    cancel: &'a CancellationToken,
    deadline: Instant,
    run_timeout: Duration,
}

impl<S: EventSink> Gate<'_, S> {
    fn check(&self) -> Result<(), StepError> {
        if self.cancel.is_cancelled() {
            Err(StepError::Cancelled)
        } else if Instant::now() >= self.deadline {
            Err(StepError::TimedOut(self.run_timeout))
        } else {
            Ok(())
        }
    }

    async fn emit(&self, event: AgentEvent) -> Result<(), StepError> {
        self.check()?;
        Ok(self.sink.emit(event).await?)
    }

    /// Awaits `fut`; if it is not ready at once, the sink first stores what it holds, so
    /// events never wait for the provider or a tool (see [`EventSink::emit`]).
    async fn flushing<F: Future>(&self, fut: F) -> Result<F::Output, StepError> {
        let mut fut = std::pin::pin!(fut);
        if let Some(out) = (&mut fut).now_or_never() {
            return Ok(out);
        }
        self.sink.flush().await?;
        Ok(fut.await)
    }
}

/// Runs `agent` on the user message in `ctx`, emitting events through `sink`.
///
/// The returned future is `Send` when `S` is, so a session can `tokio::spawn` it; it
/// finishes on its own at `run_timeout` and soon after `ctx.cancel` fires.
pub async fn run<S: EventSink>(agent: &Agent, ctx: &RunContext, sink: &S) -> RunOutcome {
    let deadline = Instant::now() + agent.run_timeout;
    let mut content = String::new();
    let started = AgentEvent::Started {
        agent: agent.name.clone(),
        message_id: ctx.message_id.clone(),
    };
    let (status, error) = match sink.emit(started).await {
        Err(error) => StepError::Sink(error).end(),
        Ok(()) => {
            let gate = Gate {
                sink,
                cancel: &ctx.cancel,
                deadline,
                run_timeout: agent.run_timeout,
            };
            let steps = steps(agent, ctx, &gate, &mut content);
            tokio::select! {
                // Cancellation and the deadline win over a step that is ready at the same
                // time; `Gate` covers the steps that never return `Pending`.
                biased;
                () = ctx.cancel.cancelled() => StepError::Cancelled.end(),
                () = sleep_until(deadline) => StepError::TimedOut(agent.run_timeout).end(),
                result = steps => match result {
                    Ok(()) => (RunStatus::Ok, None),
                    Err(error) => error.end(),
                },
            }
        }
    };
    // Events the sink still holds are stored before the end is decided: a run whose last
    // events could not be stored does not end `ok`.
    let (status, error) = match sink.flush().await {
        Err(e) if status == RunStatus::Ok => StepError::Sink(e).end(),
        _ => (status, error),
    };
    let mut outcome = RunOutcome {
        status,
        content,
        error,
        completion_stored: false,
    };
    match sink.emit(outcome.completed_event()).await {
        Ok(()) => outcome.completion_stored = true,
        Err(error) => {
            tracing::warn!(run_id = %ctx.run_id, %error, "could not store agent_completed")
        }
    }
    outcome
}

/// The step loop; appends every streamed delta to `content`.
async fn steps<S: EventSink>(
    agent: &Agent,
    ctx: &RunContext,
    sink: &Gate<'_, S>,
    content: &mut String,
) -> Result<(), StepError> {
    let mut conversation = vec![
        ChatMessage::System {
            content: format!(
                "You are `{}`, an assistant in a chat. Use tools when they help.",
                agent.name
            ),
        },
        ChatMessage::User {
            content: ctx.content.clone(),
        },
    ];
    for step in 1..=agent.max_steps {
        let (text, calls) = one_step(agent, &conversation, sink, content).await?;
        if calls.is_empty() {
            return Ok(());
        }
        // Results of calls made in the last allowed step could never be read, so they are
        // not executed at all.
        if step == agent.max_steps {
            break;
        }
        conversation.push(ChatMessage::Assistant {
            content: text,
            tool_calls: calls.clone(),
        });
        for call in calls {
            sink.emit(AgentEvent::ToolExecuting {
                call_id: call.call_id.clone(),
                tool: call.name.clone(),
                arguments: call.arguments.clone(),
            })
            .await?;
            let (outcome, duration_ms) = sink.flushing(execute(agent, ctx, &call)).await?;
            sink.emit(AgentEvent::ToolCompleted {
                call_id: call.call_id.clone(),
                tool: call.name.clone(),
                outcome: outcome.clone(),
                duration_ms,
            })
            .await?;
            conversation.push(ChatMessage::Tool {
                call_id: call.call_id,
                name: call.name,
                outcome,
            });
        }
    }
    Err(StepError::MaxSteps(agent.max_steps))
}

/// Streams one provider step, emitting thinking and deltas; returns its text and calls.
async fn one_step<S: EventSink>(
    agent: &Agent,
    conversation: &[ChatMessage],
    sink: &Gate<'_, S>,
    content: &mut String,
) -> Result<(String, Vec<ToolCall>), StepError> {
    let specs = agent.specs();
    let request = ProviderRequest {
        messages: conversation,
        tools: &specs,
    };
    sink.check()?;
    let mut stream = agent.provider.stream(request);
    let mut text = String::new();
    let mut calls = Vec::new();
    while let Some(chunk) = sink.flushing(stream.next()).await? {
        match chunk? {
            Chunk::Thinking(thought) => sink.emit(AgentEvent::Thinking { text: thought }).await?,
            Chunk::Delta(delta) => {
                // Appended only once emitted, so `content` is what the client was sent.
                let event = AgentEvent::ResponseDelta {
                    delta: delta.clone(),
                };
                sink.emit(event).await?;
                text.push_str(&delta);
                content.push_str(&delta);
            }
            Chunk::ToolCall(call) => calls.push(call),
            Chunk::Finished => break,
        }
    }
    Ok((text, calls))
}

/// Runs one tool call under `tool_timeout`; every failure becomes an error outcome.
async fn execute(
    agent: &Agent,
    ctx: &RunContext,
    call: &ToolCall,
) -> (Result<serde_json::Value, ErrorInfo>, u64) {
    let start = Instant::now();
    let outcome = match agent.tool(&call.name) {
        None => Err(ErrorInfo::new(
            codes::TOOL_NOT_ENABLED,
            format!(
                "the tool `{}` is not enabled for agent `{}`",
                call.name, agent.name
            ),
        )),
        Some(tool) => {
            match timeout(agent.tool_timeout, tool.call(call.arguments.clone(), ctx)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(ErrorInfo::new(
                    codes::TOOL_TIMEOUT,
                    format!(
                        "`{}` did not finish within {} ms",
                        call.name,
                        agent.tool_timeout.as_millis()
                    ),
                )),
            }
        }
    };
    let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    (outcome, duration_ms)
}

#[cfg(test)]
mod tests;
