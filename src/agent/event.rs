//! Agent events: what a run reports, their protocol JSON bodies, and the sink the caller
//! stores and delivers them through.
//!
//! An [`AgentEvent`] knows nothing about threads or sequence numbers. The caller (the
//! session) adds `run_id`, `thread_id` and `seq` to the map from [`AgentEvent::to_body`]
//! when it stores and sends the event, because only it owns the thread's sequence.

use std::future::Future;

use serde::Serialize;
use serde_json::{Map, Value, json};
use thiserror::Error;

use super::provider::Usage;
use crate::wire::{BodyWriter, EventBody, EventKind, RunStatus};

/// Stable error codes that runs put in `agent_completed.error` and `tool_completed.error`.
pub mod codes {
    use crate::wire::ErrorCode;

    /// The event sink (storage) failed; the run stopped.
    pub const STORAGE_UNAVAILABLE: &str = ErrorCode::StorageUnavailable.as_str();
    /// The provider (model) failed.
    pub const PROVIDER_ERROR: &str = ErrorCode::ProviderError.as_str();
    /// The provider still asked for tools after `max_steps` steps.
    pub const MAX_STEPS: &str = ErrorCode::MaxSteps.as_str();
    /// The whole run exceeded `run_timeout`.
    pub const RUN_TIMEOUT: &str = ErrorCode::RunTimeout.as_str();
    /// A tool exceeded `tool_timeout`.
    pub const TOOL_TIMEOUT: &str = ErrorCode::ToolTimeout.as_str();
    /// The provider asked for a tool this agent does not have.
    pub const TOOL_NOT_ENABLED: &str = ErrorCode::ToolNotEnabled.as_str();
    /// A tool was called with arguments it cannot use.
    pub const INVALID_ARGUMENTS: &str = ErrorCode::InvalidArguments.as_str();
    /// A tool failed for its own reasons.
    pub const TOOL_FAILED: &str = ErrorCode::ToolFailed.as_str();
    /// The answer reached the agent's `max_answer_bytes`; the run ended there.
    pub const ANSWER_TOO_LONG: &str = ErrorCode::AnswerTooLong.as_str();
    /// The run reached the agent's `max_run_events`.
    pub const TOO_MANY_EVENTS: &str = ErrorCode::TooManyEvents.as_str();
    /// A tool result exceeded the agent's `max_tool_result_bytes`.
    pub const TOOL_RESULT_TOO_LARGE: &str = ErrorCode::ToolResultTooLarge.as_str();
    /// The model endpoint could not be reached or answered 5xx (after retries).
    pub const MODEL_UNAVAILABLE: &str = ErrorCode::ModelUnavailable.as_str();
    /// The model endpoint kept answering 429 (after retries).
    pub const MODEL_RATE_LIMITED: &str = ErrorCode::ModelRateLimited.as_str();
    /// The model's stream broke off or stalled after it had begun.
    pub const MODEL_STREAM_BROKEN: &str = ErrorCode::ModelStreamBroken.as_str();
    /// The model sent something that is not the OpenAI streaming format.
    pub const MODEL_BAD_RESPONSE: &str = ErrorCode::ModelBadResponse.as_str();
    /// The model endpoint refused the request itself (4xx other than 429: key, model
    /// name, parameters).
    pub const MODEL_REQUEST_REFUSED: &str = ErrorCode::ModelRequestRefused.as_str();
    /// The model stopped at `max_output_tokens` (`finish_reason: length`).
    pub const MODEL_OUTPUT_LIMIT: &str = ErrorCode::ModelOutputLimit.as_str();
    /// The model's content filter stopped the answer.
    pub const MODEL_CONTENT_FILTERED: &str = ErrorCode::ModelContentFiltered.as_str();
}

/// A stable code plus a human-readable message, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorInfo {
    /// Stable, machine-matchable code (see [`codes`]).
    pub code: String,
    /// Human-readable explanation; never contains secrets.
    pub message: String,
}

impl ErrorInfo {
    /// Builds one from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The error of a tool call; the same shape as a run error on the wire.
pub type ToolErrorInfo = ErrorInfo;

/// One event of a run, in the order the run produced it.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// Always first.
    Started {
        /// Agent name.
        agent: String,
        /// The user message this run answers.
        message_id: String,
    },
    /// The provider's reasoning or plan, for display.
    Thinking {
        /// Text.
        text: String,
    },
    /// A tool call is about to run.
    ToolExecuting {
        /// Provider-chosen id pairing this with its `ToolCompleted`.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Arguments as the provider gave them.
        arguments: Value,
    },
    /// A tool call finished, failed or timed out.
    ToolCompleted {
        /// Same id as the `ToolExecuting`.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Result, or the error fed back to the provider.
        outcome: Result<Value, ToolErrorInfo>,
        /// Wall time of the call.
        duration_ms: u64,
    },
    /// A piece of the streamed answer.
    ResponseDelta {
        /// Text to append.
        delta: String,
    },
    /// Always last, exactly once.
    Completed {
        /// How the run ended.
        status: RunStatus,
        /// The whole answer streamed so far (all deltas concatenated).
        content: String,
        /// Why, when the status is not `ok`.
        error: Option<ErrorInfo>,
        /// Tokens the model reported (model providers only).
        usage: Option<Usage>,
    },
}

impl AgentEvent {
    /// The protocol `type` of this event.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Started { .. } => EventKind::AgentStarted,
            Self::Thinking { .. } => EventKind::AgentThinking,
            Self::ToolExecuting { .. } => EventKind::ToolExecuting,
            Self::ToolCompleted { .. } => EventKind::ToolCompleted,
            Self::ResponseDelta { .. } => EventKind::AgentResponse,
            Self::Completed { .. } => EventKind::AgentCompleted,
        }
        .as_str()
    }

    /// The protocol JSON body without `run_id`, `thread_id` and `seq`, which the caller
    /// adds. `assistant_message_id` becomes `message.id` of `agent_completed` (the stored
    /// assistant message); other events ignore it.
    pub fn to_body(&self, assistant_message_id: &str) -> Map<String, Value> {
        let mut body = Map::new();
        self.put_fields(&mut body, assistant_message_id);
        body
    }

    /// The body [`Self::to_body`] describes, written straight to JSON text (no map is
    /// built); sealed by the store, it gives the same bytes (a test compares them).
    /// `agent_completed` stays a map: the store completes it with the message it writes.
    pub fn stored_body(&self) -> EventBody {
        if let Self::Completed { .. } = self {
            return EventBody::Map(self.to_body(""));
        }
        let mut writer = BodyWriter::default();
        self.put_fields(&mut writer, "");
        writer.finish()
    }

    /// The body's fields, `type` included, into a map or a [`BodyWriter`].
    fn put_fields(&self, f: &mut impl Fields, assistant_message_id: &str) {
        f.str("type", self.kind());
        match self {
            Self::Started { agent, message_id } => {
                f.str("agent", agent);
                f.str("message_id", message_id);
            }
            Self::Thinking { text } => f.str("text", text),
            Self::ToolExecuting {
                call_id,
                tool,
                arguments,
            } => {
                f.str("call_id", call_id);
                f.str("tool", tool);
                f.value("arguments", arguments);
            }
            Self::ToolCompleted {
                call_id,
                tool,
                outcome,
                duration_ms,
            } => {
                f.str("call_id", call_id);
                f.str("tool", tool);
                match outcome {
                    Ok(result) => f.value("result", result),
                    Err(error) => f.value("error", &json!(error)),
                }
                f.uint("duration_ms", *duration_ms);
            }
            Self::ResponseDelta { delta } => f.str("delta", delta),
            Self::Completed {
                status,
                content,
                error,
                usage,
            } => {
                f.value("status", &json!(status));
                f.value(
                    "message",
                    &json!({"id": assistant_message_id, "content": content}),
                );
                if let Some(error) = error {
                    f.value("error", &json!(error));
                }
                if let Some(usage) = usage {
                    f.value("usage", &json!(usage));
                }
            }
        }
    }
}

/// Where an event body's fields go: a JSON map, or JSON text ([`BodyWriter`]).
trait Fields {
    fn str(&mut self, key: &'static str, value: &str);
    fn value(&mut self, key: &'static str, value: &Value);
    fn uint(&mut self, key: &'static str, value: u64);
}

impl Fields for Map<String, Value> {
    fn str(&mut self, key: &'static str, value: &str) {
        self.insert(key.into(), Value::from(value));
    }
    fn value(&mut self, key: &'static str, value: &Value) {
        self.insert(key.into(), value.clone());
    }
    fn uint(&mut self, key: &'static str, value: u64) {
        self.insert(key.into(), Value::from(value));
    }
}

impl Fields for BodyWriter {
    fn str(&mut self, key: &'static str, value: &str) {
        BodyWriter::str(self, key, value);
    }
    fn value(&mut self, key: &'static str, value: &Value) {
        BodyWriter::value(self, key, value);
    }
    fn uint(&mut self, key: &'static str, value: u64) {
        BodyWriter::uint(self, key, value);
    }
}

/// The sink refused or failed to take an event (typically: storage is down).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("event sink failed: {0}")]
pub struct SinkError(pub String);

/// Where a run's events go: the caller stores each one (assigning `seq`) and fans it out
/// to the user's sockets.
///
/// `emit` is declared as returning `impl Future + Send` rather than as `async fn`, so the
/// `Send` bound is part of the contract and a run borrowing the sink can be moved into
/// `tokio::spawn`; implementors may still write `async fn emit`. The trait is therefore
/// not object-safe, which is fine: [`crate::agent::run`] is generic over it and a session
/// has exactly one sink type.
pub trait EventSink: Send + Sync {
    /// Stores and delivers one event. An error makes the run stop and end with `error`.
    ///
    /// A sink may hold events back and store them together: the runner calls [`flush`]
    /// before every wait (a provider with nothing ready yet, a tool that is not done at
    /// once), and the `Completed` event must store everything held before it. So holding
    /// back never delays an event past the moment the run would wait anyway.
    ///
    /// [`flush`]: EventSink::flush
    fn emit(&self, event: AgentEvent) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Hands the events held back by [`emit`](EventSink::emit) to storage. The default
    /// sink holds nothing back.
    fn flush(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(ev: AgentEvent) -> Value {
        Value::Object(ev.to_body("m_assistant"))
    }

    #[test]
    fn bodies_use_protocol_field_names() {
        let started = AgentEvent::Started {
            agent: "helper".into(),
            message_id: "m_1".into(),
        };
        assert_eq!(
            body(started),
            json!({"type": "agent_started", "agent": "helper", "message_id": "m_1"})
        );
        let thinking = AgentEvent::Thinking {
            text: "plan".into(),
        };
        assert_eq!(
            body(thinking),
            json!({"type": "agent_thinking", "text": "plan"})
        );
        let executing = AgentEvent::ToolExecuting {
            call_id: "call_1".into(),
            tool: "calculator".into(),
            arguments: json!({"expression": "1+1"}),
        };
        assert_eq!(
            body(executing),
            json!({"type": "tool_executing", "call_id": "call_1", "tool": "calculator",
                   "arguments": {"expression": "1+1"}})
        );
        let delta = AgentEvent::ResponseDelta {
            delta: "Hi ".into(),
        };
        assert_eq!(
            body(delta),
            json!({"type": "agent_response", "delta": "Hi "})
        );
    }

    #[test]
    fn tool_completed_carries_result_or_error_never_both() {
        let ok = AgentEvent::ToolCompleted {
            call_id: "call_1".into(),
            tool: "calculator".into(),
            outcome: Ok(json!({"value": 2})),
            duration_ms: 3,
        };
        assert_eq!(
            body(ok),
            json!({"type": "tool_completed", "call_id": "call_1", "tool": "calculator",
                   "result": {"value": 2}, "duration_ms": 3})
        );
        let failed = AgentEvent::ToolCompleted {
            call_id: "call_2".into(),
            tool: "clock".into(),
            outcome: Err(ErrorInfo::new(codes::TOOL_TIMEOUT, "too slow")),
            duration_ms: 10,
        };
        assert_eq!(
            body(failed),
            json!({"type": "tool_completed", "call_id": "call_2", "tool": "clock",
                   "error": {"code": "TOOL_TIMEOUT", "message": "too slow"}, "duration_ms": 10})
        );
    }

    #[test]
    fn completed_names_the_assistant_message_and_omits_absent_error() {
        let ok = AgentEvent::Completed {
            status: RunStatus::Ok,
            content: "14".into(),
            error: None,
            usage: None,
        };
        assert_eq!(
            body(ok),
            json!({"type": "agent_completed", "status": "ok",
                   "message": {"id": "m_assistant", "content": "14"}})
        );
        let timeout = AgentEvent::Completed {
            status: RunStatus::Timeout,
            content: String::new(),
            error: Some(ErrorInfo::new(codes::RUN_TIMEOUT, "late")),
            usage: None,
        };
        assert_eq!(
            body(timeout),
            json!({"type": "agent_completed", "status": "timeout",
                   "message": {"id": "m_assistant", "content": ""},
                   "error": {"code": "RUN_TIMEOUT", "message": "late"}})
        );
        for (status, text) in [
            (RunStatus::Ok, "ok"),
            (RunStatus::Error, "error"),
            (RunStatus::Cancelled, "cancelled"),
            (RunStatus::Timeout, "timeout"),
        ] {
            assert_eq!(status.as_str(), text);
            assert_eq!(json!(status), json!(text));
        }
    }

    /// Every agent event written field by field seals to exactly the bytes of its map.
    #[test]
    fn written_bodies_seal_to_the_bytes_of_their_maps() {
        use crate::wire::{EventRecord, completed_body, seal_json};
        let events = [
            AgentEvent::Started {
                agent: "assistant".into(),
                message_id: "m_1".into(),
            },
            AgentEvent::Thinking {
                text: "plan: \"quote\" \\ \n\u{1} é 😀".into(),
            },
            AgentEvent::ToolExecuting {
                call_id: "c_1".into(),
                tool: "calculator".into(),
                arguments: json!({"z": [1, 2.5, null, true], "a": {"y": "x\ty", "b": -3}}),
            },
            AgentEvent::ToolCompleted {
                call_id: "c_1".into(),
                tool: "calculator".into(),
                outcome: Ok(json!({"value": 4, "expression": "2+2"})),
                duration_ms: 17,
            },
            AgentEvent::ToolCompleted {
                call_id: "c_2".into(),
                tool: "clock".into(),
                outcome: Err(ToolErrorInfo {
                    code: "TOOL_TIMEOUT".into(),
                    message: "took \"too\" long".into(),
                }),
                duration_ms: u64::MAX,
            },
            AgentEvent::ResponseDelta { delta: "".into() },
        ];
        for event in events {
            let written = EventRecord {
                run_id: "r_1".into(),
                body: event.stored_body(),
            };
            assert!(matches!(written.body, EventBody::Written(_)), "{event:?}");
            let mapped = EventRecord {
                run_id: "r_1".into(),
                body: EventBody::Map(event.to_body("")),
            };
            let sealed = seal_json("t_1", 42, &written);
            assert_eq!(sealed, seal_json("t_1", 42, &mapped), "{event:?}");
            // SQLite stores a run's events as one text, one event a line
            // (`sqlite/batch/commit.rs`): a sealed event never contains a newline.
            assert!(!sealed.contains('\n'), "{sealed}");
        }
        let mut completed = Map::new();
        completed.insert("error".into(), json!({"message": "line 1\nline 2\r\n"}));
        let body = completed_body(EventBody::Map(completed), "error", "m_1", "a\nb");
        let sealed = seal_json(
            "t_1",
            43,
            &EventRecord {
                run_id: "r_1".into(),
                body,
            },
        );
        assert!(
            !sealed.contains('\n') && sealed.contains("a\\nb"),
            "{sealed}"
        );
    }
}
