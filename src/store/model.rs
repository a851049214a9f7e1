//! The store's data types and the pure helpers both databases share: ids, timestamps,
//! thread titles and turning an event body into the exact JSON text clients receive.

use std::fmt::Write as _;

use crate::json_out;
use crate::wire::ErrorCode;
use rand::Rng;
use serde_json::{Map, Value, json};

/// A user message as the WebSocket layer hands it to the store.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// The verified user (the token's subject).
    pub user_id: &'a str,
    /// The client-chosen message id: the idempotency key, unique per user.
    pub client_id: &'a str,
    /// The thread to post into; `None` starts a new thread.
    pub thread_id: Option<&'a str>,
    /// The message text.
    pub content: &'a str,
    /// The agent that will answer (recorded on the run).
    pub agent: &'a str,
}

/// What the `ack` frame carries: the ids under which a user message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The thread the message is in (new or given).
    pub thread_id: String,
    /// The stored user message.
    pub message_id: String,
    /// The run started for it.
    pub run_id: String,
    /// True when this client id was seen before: these are the original ids and
    /// nothing new was created, so the caller must not start a second run.
    pub duplicate: bool,
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
    fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
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
        self.field(key, |out| json_out::put_str(out, value));
    }

    /// Any JSON value.
    pub fn value(&mut self, key: &'static str, value: &Value) {
        self.field(key, |out| json_out::put_value(out, value));
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
            text: json_out::into_string(self.text),
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

/// One entry of a user's thread list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSummary {
    /// Thread id (`t_…`).
    pub thread_id: String,
    /// The first characters of the thread's first message.
    pub title: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC; moves on every message and event.
    pub updated_at: String,
    /// The highest `seq` stored in the thread (0 when it has no events).
    pub last_seq: i64,
}

/// One message of a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// Message id (`m_…`).
    pub message_id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
    /// The run the message started (user) or ended (assistant).
    pub run_id: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// A run left `running` by a crash, as found at boot.
#[derive(Debug, Clone)]
pub(crate) struct OpenRun {
    pub thread_id: String,
    pub run_id: String,
}

/// A fresh id: `prefix` + `_` + 20 lowercase hex characters (80 random bits), enough
/// that collisions are not a practical concern and short enough to read in logs.
/// Ids start with the time in milliseconds, so new rows go to the end of the primary-key
/// indexes instead of random pages (fewer page writes per commit); 80 random bits follow.
pub(crate) fn new_id(prefix: &str) -> String {
    let bits: u128 = rand::rng().random::<u128>() >> 48;
    let millis = chrono::Utc::now().timestamp_millis().max(0) as u128 & 0xffff_ffff_ffff;
    // Written by hand: `format!` with two padded hex fields cost about as much as the rest
    // of the id (every accepted message takes three ids).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(prefix.len() + 33);
    id.push_str(prefix);
    id.push('_');
    let value = (millis << 80) | bits;
    for i in (0..32).rev() {
        id.push(char::from(HEX[((value >> (4 * i)) & 0xf) as usize]));
    }
    id
}

/// Now as RFC 3339 UTC with fixed millisecond precision, so that text order is time
/// order in both databases (timestamps are stored as TEXT in both).
pub(crate) fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Maximum title length in characters (not bytes, so multi-byte text is never cut).
const TITLE_CHARS: usize = 60;

/// A thread title from its first message: whitespace collapsed, at most 60 characters,
/// with an ellipsis when cut.
pub(crate) fn title_from(content: &str) -> String {
    let words: Vec<&str> = content.split_whitespace().collect();
    let flat = words.join(" ");
    if flat.is_empty() {
        return "New thread".to_string();
    }
    if flat.chars().count() <= TITLE_CHARS {
        return flat;
    }
    let mut cut: String = flat.chars().take(TITLE_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// Stamps `thread_id`, `seq` and `run_id` into the body and serializes it once; the
/// resulting text is stored and sent as is, so replay is byte-identical to live.
pub(crate) fn seal(thread_id: &str, seq: i64, record: EventRecord) -> StoredEvent {
    let json = seal_json(thread_id, seq, &record);
    StoredEvent {
        seq,
        run_id: record.run_id,
        json,
    }
}

/// [`seal`] without taking the record, so a batch that must be retried still has it.
/// Writes the JSON text directly instead of inserting into the map and serializing a
/// `Value`: the keys come out in the same (sorted) order and with the same escaping as
/// `Value::Object(body).to_string()` after the three inserts, so the bytes are identical
/// (`crate::json_out` writes what serde_json writes).
pub(crate) fn seal_json(thread_id: &str, seq: i64, record: &EventRecord) -> String {
    merge_record(thread_id, Part::Int(seq), record).0
}

/// A sealed event's text around its `seq`: `prefix + seq + suffix` (the seq in decimal)
/// is exactly [`seal_json`]'s text. Lets Postgres number events inside the statement that
/// assigns their seqs, so an append is one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedAround {
    pub prefix: String,
    pub suffix: String,
}

impl SealedAround {
    /// The text with `seq` in its place.
    pub(crate) fn with_seq(&self, seq: i64) -> String {
        let mut text = String::with_capacity(self.prefix.len() + self.suffix.len() + 20);
        text.push_str(&self.prefix);
        // Writing into a String cannot fail.
        let _ = write!(text, "{seq}");
        text.push_str(&self.suffix);
        text
    }
}

/// [`seal_json`] with the seq left out, split where it goes.
pub(crate) fn seal_around(thread_id: &str, record: &EventRecord) -> SealedAround {
    let (mut prefix, at) = merge_record(thread_id, Part::Hole, record);
    let suffix = prefix.split_off(at);
    SealedAround { prefix, suffix }
}

/// The merged text of a record with `seq` as given, and where the seq's value starts.
fn merge_record(thread_id: &str, seq: Part<'_>, record: &EventRecord) -> (String, usize) {
    let owned = [
        ("run_id", Part::Str(&record.run_id)),
        ("seq", seq),
        ("thread_id", Part::Str(thread_id)),
    ];
    match &record.body {
        EventBody::Map(map) => {
            merge_sorted(owned, map.iter().map(|(k, v)| (k.as_str(), Part::Value(v))))
        }
        EventBody::Written(body) => {
            merge_sorted(owned, body.fields().map(|(k, v)| (k, Part::Written(v))))
        }
    }
}

/// A field's value on its way into a sealed event.
enum Part<'a> {
    Str(&'a str),
    Int(i64),
    Value(&'a Value),
    /// Already JSON text.
    Written(&'a str),
    /// Nothing yet: where the seq goes ([`seal_around`]).
    Hole,
}

/// One JSON object from the store-owned fields (in key order: `run_id` < `seq` <
/// `thread_id`) and the body's (in key order), the store's winning a shared key; with
/// the byte offset of a [`Part::Hole`] (0 if none).
fn merge_sorted<'a>(
    owned: [(&'static str, Part<'a>); 3],
    body: impl Iterator<Item = (&'a str, Part<'a>)>,
) -> (String, usize) {
    let mut out: Vec<u8> = Vec::with_capacity(256);
    let mut hole = 0;
    out.push(b'{');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, key: &str, value: &Part<'_>| {
        if !first {
            out.push(b',');
        }
        first = false;
        json_out::put_str(out, key);
        out.push(b':');
        match value {
            Part::Str(s) => json_out::put_str(out, s),
            // Writing into a Vec cannot fail.
            Part::Int(n) => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
            Part::Value(v) => json_out::put_value(out, v),
            Part::Written(text) => out.extend_from_slice(text.as_bytes()),
            Part::Hole => hole = out.len(),
        }
    };
    let mut pending = owned.iter().peekable();
    for (name, value) in body {
        if owned.iter().any(|(o, _)| *o == name) {
            continue;
        }
        while let Some((o, v)) = pending.next_if(|(o, _)| *o < name) {
            put(&mut out, o, v);
        }
        put(&mut out, name, &value);
    }
    for (o, v) in pending {
        put(&mut out, o, v);
    }
    out.push(b'}');
    (json_out::into_string(out), hole)
}

/// The `agent_completed` body for a finished run: the caller's extra fields (such as
/// `error`) plus the fields the store owns, which win.
pub(crate) fn completed_body(
    body: EventBody,
    status: &str,
    message_id: &str,
    content: &str,
) -> EventBody {
    let mut body = match body {
        EventBody::Map(map) => map,
        // Runs hand their completion over as a map; a written one is read back (each
        // field is valid JSON text, written by `BodyWriter`).
        EventBody::Written(written) => written
            .fields()
            .map(|(key, text)| {
                let value = serde_json::from_str(text).unwrap_or(Value::Null);
                (key.to_string(), value)
            })
            .collect(),
    };
    body.insert("type".into(), Value::from("agent_completed"));
    body.insert("status".into(), Value::from(status));
    body.insert(
        "message".into(),
        json!({ "id": message_id, "content": content }),
    );
    EventBody::Map(body)
}

/// The event closing a run that a crash interrupted.
pub(crate) fn interrupted_event(run_id: &str) -> EventRecord {
    let mut body = Map::new();
    body.insert(
        "error".into(),
        json!({ "code": ErrorCode::Interrupted.as_str(), "message": "the server restarted during this run" }),
    );
    EventRecord {
        run_id: run_id.to_string(),
        body: EventBody::Map(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = new_id("t");
        assert!(a.starts_with("t_") && a.len() == 34, "{a}");
        let b = new_id("t");
        assert!(
            a[2..14] <= b[2..14],
            "ids start with the time: {a} then {b}"
        );
        assert_ne!(a, new_id("t"));
        // The same layout as `{millis:012x}{80 random bits:020x}`.
        let millis = u64::from_str_radix(&a[2..14], 16).expect("hex time");
        let now = chrono::Utc::now().timestamp_millis() as u64;
        assert!(now - millis < 60_000, "{a} starts with the time in ms");
        assert!(
            a[14..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn titles_collapse_whitespace_and_cut_on_chars() {
        assert_eq!(title_from("  hello\n\nworld "), "hello world");
        assert_eq!(title_from(""), "New thread");
        let long = "é".repeat(100);
        let t = title_from(&long);
        assert_eq!(t.chars().count(), TITLE_CHARS);
        assert!(t.ends_with('…'));
    }

    #[test]
    fn seal_is_byte_identical_to_value_serialization() {
        let bodies = [
            json!({"type": "agent_thinking", "text": "hé \"q\" \n\u{1}"}),
            json!({"type": "tool_completed", "call_id": "c", "tool": "t", "result": {"z": 1, "a": [1, 2]}, "duration_ms": 3}),
            json!({"type": "agent_completed", "seq": 99, "run_id": "x", "thread_id": "y", "zz": null, "aa": true}),
            json!({}),
        ];
        for body in bodies {
            let Value::Object(map) = body else {
                unreachable!()
            };
            let mut expected = map.clone();
            expected.insert("thread_id".into(), Value::from("t_1"));
            expected.insert("seq".into(), Value::from(7));
            expected.insert("run_id".into(), Value::from("r_1"));
            let record = EventRecord {
                run_id: "r_1".into(),
                body: EventBody::Map(map),
            };
            assert_eq!(
                seal_json("t_1", 7, &record),
                Value::Object(expected).to_string()
            );
        }
    }

    #[test]
    fn seal_overwrites_store_owned_fields() {
        let mut body = Map::new();
        body.insert("type".into(), Value::from("agent_thinking"));
        body.insert("seq".into(), Value::from(99));
        let ev = seal(
            "t_1",
            3,
            EventRecord {
                run_id: "r_1".into(),
                body: EventBody::Map(body),
            },
        );
        let v: Value = serde_json::from_str(&ev.json).expect("valid json");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["thread_id"], "t_1");
        assert_eq!(v["run_id"], "r_1");
        assert_eq!(v["type"], "agent_thinking");
    }

    /// Every agent event written field by field seals to exactly the bytes of its map.
    #[test]
    fn written_bodies_seal_to_the_bytes_of_their_maps() {
        use crate::agent::{AgentEvent, ToolErrorInfo};
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

    /// The text around the seq, with any seq put in, is the sealed text, for bodies
    /// written and mapped, with keys before and after `seq` and one named `seq` itself.
    #[test]
    fn sealed_around_a_seq_is_the_sealed_text() {
        let mut w = BodyWriter::default();
        w.str("a", "seq");
        w.uint("seq", 99);
        w.str("type", "agent_thinking");
        let mut map = Map::new();
        map.insert("nested".into(), json!({"seq": 5, "x": "\"seq\":1"}));
        map.insert("zz".into(), Value::from("é"));
        for body in [w.finish(), EventBody::Map(map), EventBody::Map(Map::new())] {
            let record = EventRecord {
                run_id: "r_1".into(),
                body,
            };
            let around = seal_around("t_1", &record);
            for seq in [1, 9, 10, 12_345, i64::MAX] {
                assert_eq!(around.with_seq(seq), seal_json("t_1", seq, &record));
            }
        }
    }

    /// A written body keeps a key's last value, and the store's fields still win.
    #[test]
    fn written_bodies_keep_the_last_value_and_yield_to_the_store() {
        let mut w = BodyWriter::default();
        w.str("type", "agent_thinking");
        w.uint("seq", 99);
        w.str("text", "first");
        w.str("text", "second");
        let ev = seal(
            "t_1",
            3,
            EventRecord {
                run_id: "r_1".into(),
                body: w.finish(),
            },
        );
        assert_eq!(
            ev.json,
            r#"{"run_id":"r_1","seq":3,"text":"second","thread_id":"t_1","type":"agent_thinking"}"#
        );
    }

    /// A completion handed over written is completed like a map.
    #[test]
    fn a_written_completion_gets_the_stores_fields() {
        let mut w = BodyWriter::default();
        w.str("type", "agent_completed");
        w.value("error", &json!({"code": "X", "message": "m"}));
        w.str("status", "ok");
        let sealed = |body| {
            seal_json(
                "t_1",
                5,
                &EventRecord {
                    run_id: "r_1".into(),
                    body,
                },
            )
        };
        let mut map = Map::new();
        map.insert("type".into(), Value::from("agent_completed"));
        map.insert("error".into(), json!({"code": "X", "message": "m"}));
        assert_eq!(
            sealed(completed_body(w.finish(), "error", "m_9", "hi")),
            sealed(completed_body(EventBody::Map(map), "error", "m_9", "hi"))
        );
    }
}
