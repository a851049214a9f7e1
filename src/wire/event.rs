//! Events as the protocol knows them (docs/PROTOCOL.md §2): their `type`s, a run's end
//! status, an event's body before and after sealing, and the writer that builds a body
//! as JSON text field by field on the hot path.

use serde::Serialize;
use serde_json::{Map, Value};

use super::json;

/// The `type` of an event a run produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `agent_started`: always first.
    AgentStarted,
    /// `agent_thinking`: the model's reasoning or plan.
    AgentThinking,
    /// `tool_executing`: a tool call is about to run.
    ToolExecuting,
    /// `tool_completed`: a tool call finished, failed or timed out.
    ToolCompleted,
    /// `agent_response`: a piece of the streamed answer (several may be coalesced).
    AgentResponse,
    /// `agent_completed`: always last, exactly once.
    AgentCompleted,
}

impl EventKind {
    /// Every kind, in the order a run may produce them.
    pub const ALL: [EventKind; 6] = [
        Self::AgentStarted,
        Self::AgentThinking,
        Self::ToolExecuting,
        Self::ToolCompleted,
        Self::AgentResponse,
        Self::AgentCompleted,
    ];

    /// The `type` as sent.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AgentStarted => "agent_started",
            Self::AgentThinking => "agent_thinking",
            Self::ToolExecuting => "tool_executing",
            Self::ToolCompleted => "tool_completed",
            Self::AgentResponse => "agent_response",
            Self::AgentCompleted => "agent_completed",
        }
    }

    /// The kind a `type` names, if it is one.
    pub fn parse(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

/// How a run ended; the `status` of `agent_completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The agent answered.
    Ok,
    /// The provider, storage or the step cap stopped the run.
    Error,
    /// The client (or the server) cancelled the run.
    Cancelled,
    /// The run exceeded its `run_timeout`.
    Timeout,
}

impl RunStatus {
    /// The protocol spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
            Self::Timeout => "timeout",
        }
    }
}

/// An event to append to a thread, before the store assigns its `seq`.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The run the event belongs to.
    pub run_id: String,
    /// The event object (`type` and its fields). The store adds `thread_id`, `seq`
    /// and `run_id`, overwriting any values already there.
    pub body: EventBody,
}

/// An event object without the fields the store owns.
#[derive(Debug, Clone)]
pub enum EventBody {
    /// As a JSON map.
    Map(Map<String, Value>),
    /// Already written as JSON text, field by field ([`BodyWriter`]): the store only
    /// merges its own fields in. Runs store their events this way, which saves building
    /// and dropping a map per event (docs/PERFORMANCE.md item 8).
    Written(WrittenBody),
}

/// Fields written as JSON: each key with the range of its value's text, sorted by key.
#[derive(Debug, Clone)]
pub struct WrittenBody {
    text: String,
    fields: Vec<(&'static str, std::ops::Range<usize>)>,
}

impl WrittenBody {
    /// The fields in key order, each with its value's JSON text.
    pub(super) fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.fields
            .iter()
            .map(|(key, range)| (*key, &self.text[range.clone()]))
    }
}

/// Writes an event body field by field, in any order, with the bytes serde_json writes.
/// A key written twice keeps its last value, as a map would.
pub struct BodyWriter {
    text: Vec<u8>,
    fields: Vec<(&'static str, std::ops::Range<usize>)>,
}

impl Default for BodyWriter {
    /// Sized for an agent event (at most six fields, most under 128 bytes of text).
    fn default() -> Self {
        Self {
            text: Vec::with_capacity(128),
            fields: Vec::with_capacity(6),
        }
    }
}

impl BodyWriter {
    fn field(&mut self, key: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.text.len();
        write(&mut self.text);
        let range = start..self.text.len();
        self.fields.retain(|(k, _)| *k != key);
        self.fields.push((key, range));
    }

    /// A string field.
    pub fn str(&mut self, key: &'static str, value: &str) {
        self.field(key, |out| json::put_str(out, value));
    }

    /// Any JSON value.
    pub fn value(&mut self, key: &'static str, value: &Value) {
        self.field(key, |out| json::put_value(out, value));
    }

    /// An unsigned integer.
    pub fn uint(&mut self, key: &'static str, value: u64) {
        // Writing into a Vec cannot fail.
        self.field(key, |out| {
            let _ = serde_json::to_writer(&mut *out, &value);
        });
    }

    /// The body, its fields in key order.
    pub fn finish(mut self) -> EventBody {
        self.fields.sort_unstable_by_key(|(key, _)| *key);
        EventBody::Written(WrittenBody {
            text: json::into_string(self.text),
            fields: self.fields,
        })
    }
}

/// A stored event: its sequence number and the exact JSON text sent to clients, both
/// live and on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the thread: 1, 2, 3, … without gaps, across runs and restarts.
    pub seq: i64,
    /// The run the event belongs to.
    pub run_id: String,
    /// The serialized event, including `thread_id`, `seq` and `run_id`.
    pub json: String,
}
