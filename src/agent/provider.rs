//! The provider interface: a model that, given the conversation so far and the tools it may
//! call, streams one step's worth of chunks.
//!
//! It is shaped like OpenAI-style chat completions with tool calls so an HTTP provider can
//! map onto it directly: the conversation is system/user/assistant/tool messages, an
//! assistant turn may carry tool calls, and each tool result is answered by `call_id`.

use futures_util::stream::BoxStream;
use serde_json::Value;
use thiserror::Error;

use super::event::ErrorInfo;

/// One tool call the provider asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Provider-chosen id; the tool result answers it.
    pub call_id: String,
    /// Tool name.
    pub name: String,
    /// JSON arguments.
    pub arguments: Value,
}

/// One message of the conversation the runner keeps for a run.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    /// Instructions for the model.
    System {
        /// Text.
        content: String,
    },
    /// The user's message.
    User {
        /// Text.
        content: String,
    },
    /// What the provider produced in one step.
    Assistant {
        /// Concatenated deltas of that step.
        content: String,
        /// Tool calls of that step, in order.
        tool_calls: Vec<ToolCall>,
    },
    /// The outcome of one tool call, fed back to the provider.
    Tool {
        /// The call this answers.
        call_id: String,
        /// Tool name.
        name: String,
        /// Result, or the error (tool failure, timeout, not enabled).
        outcome: Result<Value, ErrorInfo>,
    },
}

/// One piece of a provider's streamed step.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// Reasoning or a plan, shown as `agent_thinking`.
    Thinking(String),
    /// Answer text, shown as `agent_response`.
    Delta(String),
    /// A tool call; the runner executes all of a step's calls after the step ends.
    ToolCall(ToolCall),
    /// The step is over (the end of the stream means the same).
    Finished,
}

/// A tool as the provider is told about it (OpenAI `tools[].function`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Name the provider calls it by.
    pub name: &'static str,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// What one step is asked with.
#[derive(Debug, Clone, Copy)]
pub struct ProviderRequest<'a> {
    /// The whole conversation so far.
    pub messages: &'a [ChatMessage],
    /// The tools enabled for this agent.
    pub tools: &'a [ToolSpec],
}

/// The provider failed (network, HTTP status, malformed response).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("provider failed: {0}")]
pub struct ProviderError(pub String);

/// A model behind the agent.
///
/// `stream` returns a boxed stream so providers can be held as `Arc<dyn Provider>` in the
/// process-scope registry. Dropping the stream must abort the step (cancellation and
/// timeouts work by dropping).
pub trait Provider: Send + Sync {
    /// Provider kind, for logs.
    fn kind(&self) -> &'static str;

    /// Streams one step. An `Err` item ends the run with `PROVIDER_ERROR`.
    fn stream<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxStream<'a, Result<Chunk, ProviderError>>;
}
