//! The provider interface: a model that, given the conversation so far and the tools it may
//! call, streams one step's worth of chunks.
//!
//! It is shaped like OpenAI-style chat completions with tool calls so an HTTP provider can
//! map onto it directly: the conversation is system/user/assistant/tool messages, an
//! assistant turn may carry tool calls, and each tool result is answered by `call_id`.

use futures_util::stream::BoxStream;
use serde_json::Value;
use thiserror::Error;

use super::event::{ErrorInfo, Usage};

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
    /// Tokens the step used, as the model reported them.
    Usage(Usage),
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

/// The provider failed (network, HTTP status, malformed response); `code` is the
/// stable code the run ends with (`MODEL_UNAVAILABLE`, `MODEL_STREAM_BROKEN`, ...), and
/// `message` says what happened without any secret.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct ProviderError {
    /// Stable code (see [`super::codes`]).
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

impl ProviderError {
    /// An error with its code.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Whether another agent's model may answer instead: the model could not be
    /// reached or kept refusing before it produced anything.
    pub fn wants_fallback(&self) -> bool {
        use super::event::codes;
        matches!(
            self.code,
            codes::MODEL_UNAVAILABLE | codes::MODEL_RATE_LIMITED
        )
    }
}

/// A model behind the agent.
///
/// `stream` returns a boxed stream so providers can be held as `Arc<dyn Provider>` in the
/// process-scope registry. Dropping the stream must abort the step (cancellation and
/// timeouts work by dropping).
pub trait Provider: Send + Sync {
    /// Provider kind, for logs.
    fn kind(&self) -> &'static str;

    /// The model behind it, for metrics labels (`scripted` has none).
    fn model(&self) -> &str {
        ""
    }

    /// Streams one step. An `Err` item ends the run with the error's code.
    fn stream<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxStream<'a, Result<Chunk, ProviderError>>;
}
