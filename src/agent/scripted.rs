//! The built-in `scripted` provider: deterministic, no network, and useful enough for a
//! development server and the integration tests.
//!
//! On the first step it reads the latest user message ([`plan`]), streams a `Thinking`
//! line with its plan and then one tool call per intent whose tool is enabled:
//! an arithmetic expression ("what is 12*(3+4)?") calls `calculator`; the words
//! "time", "date" or "clock" call `clock`; "history", "earlier" or "what did I say" call
//! `thread_history`. On the next step it composes the answer from the tool results (errors
//! included) and streams it as word-group `Delta`s. Intents whose tool is not enabled are
//! answered with a sentence saying so; a message with no intent gets an echo and a list of
//! what the agent can do.
//!
//! # Test hooks
//! These markers in a user message exist for the integration tests; they are stripped
//! before the message is read and work only with this provider:
//! - `[[fail_tool]]`: also call the hook tool `fail_tool`, which always fails;
//! - `[[slow_tool]]`: also call the hook tool `slow_tool`, which sleeps for an hour, so it
//!   always hits the agent's `tool_timeout`;
//! - `[[slow]]` / `[[slow:<ms>]]`: sleep before every streamed chunk, for the provider's
//!   default delay (250 ms) or `<ms>`, so a run can be cancelled or time out mid-stream.
//!   It uses `tokio::time::sleep`, so paused-time tests do not wait.
//! - `[[deltas:<n>]]`: answer with exactly `n` deltas (`"w1 "`, `"w2 "`, …) and nothing
//!   else, as a model streaming a long answer token by token does; `[[pad:<bytes>]]`
//!   pads each of them with that many `.` (to fill a socket with few events).
//! - `[[call:NAME]]` / `[[call:NAME {"json": "arguments"}]]`: call the tool `NAME` (any
//!   name: a declared `[tools.NAME]` tool, an MCP server's tool; the runner refuses one the
//!   agent does not have with `TOOL_NOT_ENABLED`) and report what it returned.

mod plan;

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use serde_json::Value;

use super::event::ErrorInfo;
use super::provider::{
    ChatMessage, Chunk, Provider, ProviderError, ProviderRequest, ToolCall, ToolSpec,
};
use super::tools::{FAIL_TOOL, SLOW_TOOL};
use plan::{Intent, Plan, plan};

/// Words per streamed `Delta`.
const WORDS_PER_DELTA: usize = 4;
/// Longest echo of the user's message in the no-intent answer, in characters.
const ECHO_MAX_CHARS: usize = 200;
/// Longest quote of one earlier message in the history answer, in characters.
const QUOTE_MAX_CHARS: usize = 80;

/// `text` cut to `max` characters, with an ellipsis when it was longer.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The deterministic built-in provider.
#[derive(Debug, Clone)]
pub struct ScriptedProvider {
    slow_delay: Duration,
}

impl Default for ScriptedProvider {
    fn default() -> Self {
        Self {
            slow_delay: Duration::from_millis(250),
        }
    }
}

impl ScriptedProvider {
    /// A provider whose bare `[[slow]]` hook waits `slow_delay` before each chunk.
    pub fn with_slow_delay(slow_delay: Duration) -> Self {
        Self { slow_delay }
    }
}

impl Provider for ScriptedProvider {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn stream<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxStream<'a, Result<Chunk, ProviderError>> {
        let (chunks, delay) = respond(request.messages, request.tools, self.slow_delay);
        stream::iter(chunks)
            .then(move |chunk| async move {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                Ok(chunk)
            })
            .boxed()
    }
}

/// The whole step, computed up front: it is a pure function of the conversation.
fn respond(
    messages: &[ChatMessage],
    tools: &[ToolSpec],
    slow: Duration,
) -> (Vec<Chunk>, Option<Duration>) {
    let (content, since_user) = last_user_message(messages);
    let plan = plan(content, slow);
    if let Some(n) = plan.deltas {
        let pad = ".".repeat(plan.pad);
        let words = (1..=n).map(|i| Chunk::Delta(format!("w{i}{pad} ")));
        return (words.chain([Chunk::Finished]).collect(), plan.slow);
    }
    let called: Vec<&str> = plan
        .intents
        .iter()
        .filter_map(|intent| match intent {
            Intent::Call(tool, _) => Some(tool.as_str()),
            _ => None,
        })
        .collect();
    let enabled = |tool: &str| {
        tool == FAIL_TOOL
            || tool == SLOW_TOOL
            || called.contains(&tool)
            || tools.iter().any(|t| t.name == tool)
    };
    let calls = tool_calls(&plan, &enabled);

    let mut chunks = Vec::new();
    let answered_before = since_user
        .iter()
        .any(|m| matches!(m, ChatMessage::Assistant { .. }));
    if !answered_before {
        chunks.push(Chunk::Thinking(thinking(&plan, &enabled)));
        if !calls.is_empty() {
            chunks.extend(calls.into_iter().map(Chunk::ToolCall));
            chunks.push(Chunk::Finished);
            return (chunks, plan.slow);
        }
    }
    let results = |call_id: &str| tool_result(since_user, call_id);
    let answer = answer(&plan, &enabled, &calls, results, tools);
    chunks.extend(word_groups(&answer).into_iter().map(Chunk::Delta));
    chunks.push(Chunk::Finished);
    (chunks, plan.slow)
}

/// The text of the latest user message ("" when there is none) and the messages after it.
fn last_user_message(messages: &[ChatMessage]) -> (&str, &[ChatMessage]) {
    let user_at = messages
        .iter()
        .rposition(|m| matches!(m, ChatMessage::User { .. }));
    let content = match user_at.map(|i| &messages[i]) {
        Some(ChatMessage::User { content }) => content.as_str(),
        _ => "",
    };
    (content, &messages[user_at.map_or(0, |i| i + 1)..])
}

/// One call per planned intent whose tool is enabled, numbered `call_1`, `call_2`, … in
/// plan order.
fn tool_calls(plan: &Plan, enabled: &dyn Fn(&str) -> bool) -> Vec<ToolCall> {
    plan.intents
        .iter()
        .filter(|intent| enabled(intent.tool()))
        .enumerate()
        .map(|(i, intent)| ToolCall {
            call_id: format!("call_{}", i + 1),
            name: intent.tool().into(),
            arguments: intent.arguments(),
        })
        .collect()
}

/// The outcome of the call `call_id` among the messages since the user's.
fn tool_result<'m>(
    since_user: &'m [ChatMessage],
    call_id: &str,
) -> Option<&'m Result<Value, ErrorInfo>> {
    since_user.iter().find_map(|m| match m {
        ChatMessage::Tool {
            call_id: id,
            outcome,
            ..
        } if id == call_id => Some(outcome),
        _ => None,
    })
}

fn thinking(plan: &Plan, enabled: &dyn Fn(&str) -> bool) -> String {
    if plan.intents.is_empty() {
        return "No tool needed: I will answer directly.".into();
    }
    let steps: Vec<String> = plan
        .intents
        .iter()
        .map(|intent| match enabled(intent.tool()) {
            true => format!("{} with `{}`", intent.purpose(), intent.tool()),
            false => format!(
                "{} (but `{}` is not enabled)",
                intent.purpose(),
                intent.tool()
            ),
        })
        .collect();
    format!("Plan: {}.", steps.join("; "))
}

fn answer<'m>(
    plan: &Plan,
    enabled: &dyn Fn(&str) -> bool,
    calls: &[ToolCall],
    result: impl Fn(&str) -> Option<&'m Result<Value, ErrorInfo>>,
    tools: &[ToolSpec],
) -> String {
    if plan.intents.is_empty() {
        return capabilities(&plan.text, tools);
    }
    let mut calls = calls.iter();
    let sentences: Vec<String> = plan
        .intents
        .iter()
        .map(|intent| {
            if !enabled(intent.tool()) {
                return format!(
                    "I would {}, but the `{}` tool is not enabled for this agent.",
                    intent.purpose(),
                    intent.tool()
                );
            }
            let outcome = calls.next().and_then(|call| result(&call.call_id));
            describe(intent, outcome)
        })
        .collect();
    sentences.join(" ")
}

fn describe(intent: &Intent, outcome: Option<&Result<Value, ErrorInfo>>) -> String {
    let tool = intent.tool();
    let value = match outcome {
        None => return format!("I did not get a result from `{tool}`."),
        Some(Err(error)) => {
            return match intent {
                Intent::Calculate(expression) => {
                    format!(
                        "I could not evaluate `{expression}`: {} ({}).",
                        error.message, error.code
                    )
                }
                _ => format!(
                    "The `{tool}` tool failed: {} ({}).",
                    error.message, error.code
                ),
            };
        }
        Some(Ok(value)) => value,
    };
    match intent {
        Intent::Calculate(expression) => format!("{expression} = {}.", value["value"]),
        Intent::Clock => format!(
            "The current time is {} (UTC).",
            value["now"].as_str().unwrap_or("unknown")
        ),
        Intent::History => {
            // Only the user's own messages, each shortened: quoting earlier answers (which
            // quoted earlier answers) doubled every answer (issue 13).
            let lines: Vec<String> = value["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["role"] == "user")
                .map(|m| {
                    let text = m["content"].as_str().unwrap_or("");
                    format!("\"{}\"", shorten(text, QUOTE_MAX_CHARS))
                })
                .collect();
            match lines.is_empty() {
                true => "You have not written anything earlier in this thread.".into(),
                false => format!("Earlier in this thread you wrote: {}.", lines.join("; ")),
            }
        }
        Intent::FailHook | Intent::SlowHook | Intent::Call(..) => {
            format!("The `{tool}` tool returned {value}.")
        }
    }
}

fn capabilities(text: &str, tools: &[ToolSpec]) -> String {
    let echo: String = text.chars().take(ECHO_MAX_CHARS).collect();
    let can: Vec<&str> = tools
        .iter()
        .filter_map(|t| match t.name {
            "calculator" => Some("do arithmetic (try \"what is 12*(3+4)?\")"),
            "clock" => Some("tell the current time"),
            "thread_history" => Some("recall this thread's earlier messages"),
            _ => None,
        })
        .collect();
    let offer = match can.is_empty() {
        true => "No tools are enabled for me, so I can only echo your message.".to_string(),
        false => format!("I am a scripted agent; I can {}.", can.join(", ")),
    };
    format!("You said: \"{echo}\". {offer}")
}

/// Splits `text` into deltas of a few words each; concatenated they give `text` back.
fn word_groups(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    words
        .chunks(WORDS_PER_DELTA)
        .map(|group| group.concat())
        .collect()
}

#[cfg(test)]
mod tests;
