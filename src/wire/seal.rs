//! Sealing: an event body plus the fields only the thread's store knows (`thread_id`,
//! `seq`, `run_id`) become the exact JSON text that is stored and sent, live and on
//! replay, byte for byte what `serde_json` writes for the merged map.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::event::{EventBody, EventKind, EventRecord, StoredEvent};
use super::json;

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
/// (`super::json` writes what serde_json writes).
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
        json::put_str(out, key);
        out.push(b':');
        match value {
            Part::Str(s) => json::put_str(out, s),
            // Writing into a Vec cannot fail.
            Part::Int(n) => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
            Part::Value(v) => json::put_value(out, v),
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
    (json::into_string(out), hole)
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
    body.insert(
        "type".into(),
        Value::from(EventKind::AgentCompleted.as_str()),
    );
    body.insert("status".into(), Value::from(status));
    body.insert(
        "message".into(),
        json!({ "id": message_id, "content": content }),
    );
    EventBody::Map(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    use crate::wire::BodyWriter;

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
