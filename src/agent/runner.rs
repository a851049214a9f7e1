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

use std::sync::atomic::{AtomicU32, Ordering};

use super::Agent;
use super::context::RunContext;
use super::event::{AgentEvent, ErrorInfo, EventSink, SinkError, codes};
use super::provider::{ChatMessage, Chunk, ProviderError, ProviderRequest, ToolCall, Usage};
use crate::wire::RunStatus;

mod history;

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
    /// Tokens the model reported, summed over the run's steps.
    pub usage: Option<Usage>,
}

impl RunOutcome {
    /// The `Completed` event the run emitted (or tried to).
    pub fn completed_event(&self) -> AgentEvent {
        AgentEvent::Completed {
            status: self.status,
            content: self.content.clone(),
            error: self.error.clone(),
            usage: self.usage.clone(),
        }
    }
}

/// What a run has produced so far; it lives outside the step future, so a cancelled or
/// timed-out run still reports its partial answer and usage.
#[derive(Default)]
struct Progress {
    content: String,
    thinking_bytes: usize,
    usage: Option<Usage>,
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
    /// One of the run's bounds (answer, events, tool result) was reached.
    #[error("{}", .0.message)]
    Bound(ErrorInfo),
}

impl StepError {
    /// The status and error of the `Completed` this ends the run with.
    fn end(self) -> (RunStatus, Option<ErrorInfo>) {
        let (status, code) = match self {
            Self::Bound(info) => return (RunStatus::Error, Some(info)),
            Self::Sink(_) => (RunStatus::Error, codes::STORAGE_UNAVAILABLE),
            Self::Provider(ref e) => (RunStatus::Error, e.code),
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
    /// Events emitted so far, `Started` included.
    emitted: AtomicU32,
    /// The agent's `max_run_events`; one is kept for `Completed`.
    max_events: u32,
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
        // This event and the `Completed` still to come must both fit.
        if self.emitted.load(Ordering::Relaxed) + 2 > self.max_events {
            return Err(StepError::Bound(ErrorInfo::new(
                codes::TOO_MANY_EVENTS,
                format!(
                    "the run reached the agent's max_run_events ({}); it ended there, its answer so far kept",
                    self.max_events
                ),
            )));
        }
        self.emitted.fetch_add(1, Ordering::Relaxed);
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
    let mut progress = Progress::default();
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
                emitted: AtomicU32::new(1),
                max_events: agent.bounds.max_run_events,
            };
            let steps = steps(agent, ctx, &gate, &mut progress);
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
        content: progress.content,
        error,
        completion_stored: false,
        usage: progress.usage,
    };
    match sink.emit(outcome.completed_event()).await {
        Ok(()) => outcome.completion_stored = true,
        Err(error) => {
            tracing::warn!(run_id = %ctx.run_id, %error, "could not store agent_completed")
        }
    }
    outcome
}

/// The step loop; appends every streamed delta to `progress.content`.
async fn steps<S: EventSink>(
    agent: &Agent,
    ctx: &RunContext,
    sink: &Gate<'_, S>,
    progress: &mut Progress,
) -> Result<(), StepError> {
    let system = match &agent.system_prompt {
        Some(prompt) => prompt.clone(),
        None => format!(
            "You are `{}`, an assistant in a chat. Use tools when they help.",
            agent.name
        ),
    };
    let mut conversation = vec![ChatMessage::System { content: system }];
    if agent.history_messages > 0 {
        let earlier = sink.flushing(history::earlier(agent, ctx)).await?;
        conversation.extend(earlier);
    }
    conversation.push(ChatMessage::User {
        content: ctx.content.clone(),
    });
    for step in 1..=agent.max_steps {
        let (text, calls) = one_step(agent, &conversation, sink, progress).await?;
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
            let outcome = bound_result(outcome, agent.bounds.max_tool_result_bytes);
            sink.emit(AgentEvent::ToolCompleted {
                call_id: call.call_id.clone(),
                tool: call.name.clone(),
                outcome: outcome.clone(),
                duration_ms,
            })
            .await?;
            match &outcome {
                Err(error) if error.code == codes::TOOL_RESULT_TOO_LARGE => {
                    return Err(StepError::Bound(error.clone()));
                }
                _ => {}
            }
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
    progress: &mut Progress,
) -> Result<(String, Vec<ToolCall>), StepError> {
    let specs = agent.specs();
    let max = agent.bounds.max_answer_bytes;
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
            Chunk::Thinking(mut thought) => {
                let over = cut(&mut thought, max.saturating_sub(progress.thinking_bytes));
                progress.thinking_bytes += thought.len();
                if !thought.is_empty() {
                    sink.emit(AgentEvent::Thinking { text: thought }).await?;
                }
                if over {
                    return Err(too_long("reasoning", max));
                }
            }
            Chunk::Delta(mut delta) => {
                let over = cut(&mut delta, max.saturating_sub(progress.content.len()));
                if !delta.is_empty() {
                    // Appended only once emitted, so `content` is what the client was sent.
                    let event = AgentEvent::ResponseDelta {
                        delta: delta.clone(),
                    };
                    sink.emit(event).await?;
                    text.push_str(&delta);
                    progress.content.push_str(&delta);
                }
                if over {
                    return Err(too_long("answer", max));
                }
            }
            Chunk::ToolCall(call) => calls.push(call),
            Chunk::Usage(usage) => progress.usage.get_or_insert_default().add(&usage),
            Chunk::Finished => break,
        }
    }
    Ok((text, calls))
}

/// Shortens `text` to at most `room` bytes (on a character boundary); true if it had
/// to.
fn cut(text: &mut String, room: usize) -> bool {
    if text.len() <= room {
        return false;
    }
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

fn too_long(what: &str, max: usize) -> StepError {
    StepError::Bound(ErrorInfo::new(
        codes::ANSWER_TOO_LONG,
        format!(
            "the {what} reached the agent's max_answer_bytes ({max} bytes); the run ended there, the text so far kept"
        ),
    ))
}

/// A tool result whose JSON is larger than `max` bytes becomes an error: it is never
/// stored, sent to the client or fed to the model.
fn bound_result(
    outcome: Result<serde_json::Value, ErrorInfo>,
    max: usize,
) -> Result<serde_json::Value, ErrorInfo> {
    let value = outcome?;
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |bytes| bytes.len());
    if size > max {
        return Err(ErrorInfo::new(
            codes::TOOL_RESULT_TOO_LARGE,
            format!(
                "the tool's result is {size} bytes, over the agent's max_tool_result_bytes ({max})"
            ),
        ));
    }
    Ok(value)
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
