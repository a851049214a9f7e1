//! The JSON frames the baseline sends. Each run's frames are the ones portcullis's scripted
//! agent sends for the load generator's prompt (think, call the calculator, answer): the
//! same fields, key order and id lengths, so both servers write the same bytes per run.
//!
//! Frames are written as text directly: building a `serde_json::Value` tree per event and
//! serializing it was 74% of the baseline's instructions per chat run (docs/PERFORMANCE.md,
//! item 10). Strings from the client are escaped exactly as serde_json escapes them.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Number of events in every run, agent_started through agent_completed.
pub const EVENTS_PER_RUN: u64 = 6;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique id: `prefix` and 32 hex digits, as long as portcullis's ids.
pub fn new_id(prefix: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut s = String::with_capacity(prefix.len() + 32);
    s.push_str(prefix);
    // 32 digits: 16 zeros, then the counter's 16.
    s.push_str("0000000000000000");
    for shift in (0..16).rev() {
        s.push(HEX[(n >> (shift * 4)) as usize & 15] as char);
    }
    s
}

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Appends `s` as a JSON string literal, with serde_json's escapes.
fn push_json_str(out: &mut String, s: &str) {
    // Nearly every string needs no escape: copy it whole instead of byte by byte.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // serde_json cannot fail on a &str.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

/// One JSON object, written field by field; callers give keys in sorted order, as
/// portcullis (a serde_json map) writes them.
struct Obj(String);

impl Obj {
    fn new(capacity: usize) -> Obj {
        let mut s = String::with_capacity(capacity);
        s.push('{');
        Obj(s)
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(k);
        self.0.push_str("\":");
    }

    fn str(mut self, k: &str, v: &str) -> Obj {
        self.key(k);
        push_json_str(&mut self.0, v);
        self
    }

    /// A string this server made (an id, a type name): it never needs an escape.
    fn id(mut self, k: &str, v: &str) -> Obj {
        debug_assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        self.key(k);
        self.0.push('"');
        self.0.push_str(v);
        self.0.push('"');
        self
    }

    /// A value already written as JSON.
    fn raw(mut self, k: &str, v: &str) -> Obj {
        self.key(k);
        self.0.push_str(v);
        self
    }

    fn num(mut self, k: &str, mut v: u64) -> Obj {
        self.key(k);
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            self.0.push(d as char);
        }
        self
    }

    fn done(mut self) -> Utf8Bytes {
        self.0.push('}');
        self.0.into()
    }
}

pub fn connection_established(
    conn_id: &str,
    user: &str,
    expires_at: i64,
    heartbeat_ms: u64,
) -> Utf8Bytes {
    let expires = DateTime::<Utc>::from_timestamp(expires_at, 0)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    let limits = format!(
        "{{\"max_message_bytes\":{},\"messages_per_minute\":120}}",
        crate::MAX_MESSAGE_BYTES
    );
    let o = Obj::new(320)
        .str("auth", "jwt")
        .id("connection_id", conn_id)
        .num("heartbeat_ms", heartbeat_ms)
        .raw("limits", &limits)
        .str("protocol", crate::auth::PROTOCOL)
        .str("server_time", &now_rfc3339());
    let o = match &expires {
        Some(e) => o.str("token_expires_at", e),
        None => o.raw("token_expires_at", "null"),
    };
    o.id("type", "connection_established")
        .str("user_id", user)
        .done()
}

/// Rare replies (errors) keep serde_json: they are not on the measured path.
pub fn error(code: &str, message: &str, ref_id: Option<&str>) -> Utf8Bytes {
    let mut v = json!({"type": "error", "code": code, "message": message, "retryable": false});
    if let Some(r) = ref_id {
        v["ref_id"] = json!(r);
    }
    v.to_string().into()
}

pub fn pong() -> Utf8Bytes {
    Obj::new(64)
        .str("server_time", &now_rfc3339())
        .id("type", "pong")
        .done()
}

/// The scripted answer to the load generator's prompt, as portcullis's agent gives it.
const THINKING: &str = "Plan: evaluate `12*(3+4)` with `calculator`.";
const ARGUMENTS: &str = r#"{"expression":"12*(3+4)"}"#;
const RESULT: &str = r#"{"expression":"12*(3+4)","value":84}"#;
const ANSWER: &str = "12*(3+4) = 84.";

/// The ack and the six events of one run; events carry `first_seq..first_seq+5`.
pub struct Run {
    pub ack: Utf8Bytes,
    pub events: Vec<Utf8Bytes>,
}

pub fn run(client_id: &str, thread: &str, first_seq: u64) -> Run {
    let run_id = new_id("r_");
    let message_id = new_id("m_");
    let ack = Obj::new(160)
        .str("id", client_id)
        .id("message_id", &message_id)
        .id("run_id", &run_id)
        .str("thread_id", thread)
        .id("type", "ack")
        .done();
    // Keys in sorted order: each event's own fields go before or after `run_id`, `seq`
    // and `thread_id` by name.
    let ids = |o: Obj, seq: u64| o.id("run_id", &run_id).num("seq", seq);
    let events = vec![
        ids(
            Obj::new(192)
                .id("agent", "assistant")
                .id("message_id", &message_id),
            first_seq,
        )
        .str("thread_id", thread)
        .id("type", "agent_started")
        .done(),
        ids(Obj::new(192), first_seq + 1)
            .str("text", THINKING)
            .str("thread_id", thread)
            .id("type", "agent_thinking")
            .done(),
        ids(
            Obj::new(224)
                .raw("arguments", ARGUMENTS)
                .id("call_id", "call_1"),
            first_seq + 2,
        )
        .str("thread_id", thread)
        .id("tool", "calculator")
        .id("type", "tool_executing")
        .done(),
        ids(
            Obj::new(256)
                .id("call_id", "call_1")
                .num("duration_ms", 0)
                .raw("result", RESULT),
            first_seq + 3,
        )
        .str("thread_id", thread)
        .id("tool", "calculator")
        .id("type", "tool_completed")
        .done(),
        ids(Obj::new(160).str("delta", ANSWER), first_seq + 4)
            .str("thread_id", thread)
            .id("type", "agent_response")
            .done(),
        completed(&run_id, thread, first_seq + 5),
    ];
    Run { ack, events }
}

fn completed(run_id: &str, thread: &str, seq: u64) -> Utf8Bytes {
    let mut message = Obj::new(64).str("content", ANSWER).id("id", &new_id("m_"));
    message.0.push('}');
    Obj::new(224)
        .raw("message", &message.0)
        .id("run_id", run_id)
        .num("seq", seq)
        .id("status", "ok")
        .str("thread_id", thread)
        .id("type", "agent_completed")
        .done()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn parse(f: &Utf8Bytes) -> Value {
        serde_json::from_str(f.as_str()).expect("valid JSON")
    }

    #[test]
    fn ids_are_the_prefix_and_32_hex_digits() {
        let a = new_id("r_");
        let b = new_id("r_");
        assert_eq!(a.len(), 34);
        assert!(
            a[2..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        assert_eq!(
            u64::from_str_radix(&b[18..], 16).unwrap(),
            u64::from_str_radix(&a[18..], 16).unwrap() + 1
        );
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "plain",
            "quote \" back \\ slash",
            "tab\tnl\n\u{1}",
            "é ✓ 😀",
            "",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn a_run_is_an_ack_and_six_events_with_consecutive_seqs_in_key_order() {
        let r = run("id \"1\"", "t_x", 7);
        let ack = parse(&r.ack);
        assert_eq!(ack["id"], "id \"1\"");
        assert_eq!(ack["type"], "ack");
        let types: Vec<String> = r
            .events
            .iter()
            .map(|e| parse(e)["type"].to_string())
            .collect();
        assert_eq!(
            types,
            [
                "\"agent_started\"",
                "\"agent_thinking\"",
                "\"tool_executing\"",
                "\"tool_completed\"",
                "\"agent_response\"",
                "\"agent_completed\""
            ]
        );
        for (i, e) in r.events.iter().enumerate() {
            let v = parse(e);
            assert_eq!(v["seq"], 7 + i as u64);
            assert_eq!(v["run_id"], ack["run_id"]);
            assert_eq!(v["thread_id"], "t_x");
            // serde_json's map is sorted: re-serializing gives the same bytes.
            assert_eq!(v.to_string(), e.as_str());
        }
        assert_eq!(parse(&r.events[5])["message"]["content"], ANSWER);
    }

    #[test]
    fn connection_established_has_the_protocol_fields_in_key_order() {
        let f = connection_established("c_1", "alice", 2_000_000_000, 25_000);
        let v = parse(&f);
        assert_eq!(v["protocol"], "portcullis.v1");
        assert_eq!(v["user_id"], "alice");
        assert_eq!(v["token_expires_at"], "2033-05-18T03:33:20Z");
        assert_eq!(v.to_string(), f.as_str());
    }
}
