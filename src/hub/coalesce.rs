//! Coalescing of waiting `agent_response` deltas: while a connection's queue is backed
//! up, consecutive deltas of one run merge into one frame (docs/PROTOCOL.md, "Delta
//! coalescing"). The frame keeps the first delta's `seq` and adds `seq_to`, the last
//! merged delta's `seq`, so a client knows which events it holds and resumes after
//! `seq_to`. Only the queue's slow path parses JSON: a client that keeps up never has two
//! deltas waiting.

use std::sync::Arc;

use serde::Deserialize;

use super::EventFrame;
use crate::wire::EventKind;

/// The `type` of a streamed delta event.
pub const DELTA: &str = EventKind::AgentResponse.as_str();

/// Consecutive deltas of one run, merged.
#[derive(Debug, Clone)]
pub struct Deltas {
    /// The thread.
    pub thread_id: Arc<str>,
    run_id: String,
    /// The first merged delta's seq.
    pub seq: i64,
    /// The last merged delta's seq.
    pub seq_to: i64,
    /// The merged text.
    text: String,
    /// Where each merged delta ends in `text`, so already-sent ones can be cut off.
    ends: Vec<usize>,
}

/// The fields of a stored delta event that coalescing needs.
#[derive(Deserialize)]
struct DeltaFields {
    delta: String,
    run_id: String,
}

fn fields(frame: &EventFrame) -> Option<DeltaFields> {
    if frame.kind != DELTA {
        return None;
    }
    serde_json::from_str(frame.json.as_str()).ok()
}

impl Deltas {
    /// Merges two queued delta events, when `next` directly follows `first` in one run.
    pub fn merge(first: &EventFrame, next: &EventFrame) -> Option<Self> {
        if first.thread_id != next.thread_id || next.seq != first.seq + 1 {
            return None;
        }
        let (a, b) = (fields(first)?, fields(next)?);
        if a.run_id != b.run_id {
            return None;
        }
        let mut text = a.delta;
        let ends = vec![text.len()];
        text.reserve(b.delta.len());
        let mut merged = Self {
            thread_id: Arc::clone(&first.thread_id),
            run_id: a.run_id,
            seq: first.seq,
            seq_to: first.seq,
            text,
            ends,
        };
        merged.push(next.seq, &b.delta);
        Some(merged)
    }

    /// Appends `next` when it directly follows; `false` leaves both as they are.
    pub fn absorb(&mut self, next: &EventFrame) -> bool {
        if *self.thread_id != *next.thread_id || next.seq != self.seq_to + 1 {
            return false;
        }
        match fields(next) {
            Some(f) if f.run_id == self.run_id => {
                self.push(next.seq, &f.delta);
                true
            }
            _ => false,
        }
    }

    fn push(&mut self, seq: i64, delta: &str) {
        self.text.push_str(delta);
        self.ends.push(self.text.len());
        self.seq_to = seq;
    }

    /// Bytes this item stands for in the queue's budget.
    pub fn cost(&self) -> usize {
        self.text.len() + self.run_id.len() + self.thread_id.len() + 96
    }

    /// Drops the deltas up to and including `seq` (already sent); `false` when none is left.
    pub fn skip_through(&mut self, seq: i64) -> bool {
        if seq >= self.seq_to {
            return false;
        }
        if seq >= self.seq {
            let cut = usize::try_from(seq - self.seq).unwrap_or(0);
            let from = self.ends[cut];
            self.text.drain(..from);
            self.ends.drain(..=cut);
            self.ends.iter_mut().for_each(|e| *e -= from);
            self.seq = seq + 1;
        }
        true
    }

    /// The frame's JSON: a stored delta's fields, the merged text and `seq_to`. A single
    /// delta left after [`Self::skip_through`] is written without `seq_to`, as stored.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "type": DELTA,
            "delta": self.text,
            "run_id": self.run_id,
            "thread_id": &*self.thread_id,
            "seq": self.seq,
        });
        if self.seq_to != self.seq {
            v["seq_to"] = serde_json::Value::from(self.seq_to);
        }
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn delta(run: &str, seq: i64, text: &str) -> EventFrame {
        let json =
            json!({"type": DELTA, "delta": text, "run_id": run, "thread_id": "t", "seq": seq});
        EventFrame {
            thread_id: Arc::from("t"),
            seq,
            kind: DELTA,
            json: json.to_string().into(),
        }
    }

    #[test]
    fn merges_consecutive_deltas_of_one_run_only() {
        let mut d = Deltas::merge(&delta("r", 3, "Hel"), &delta("r", 4, "lo ")).unwrap();
        assert!(d.absorb(&delta("r", 5, "world")));
        assert!(!d.absorb(&delta("r", 7, "gap")), "not the next seq");
        assert!(!d.absorb(&delta("other", 6, "x")), "another run");
        let v: Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type": DELTA, "delta": "Hello world", "run_id": "r", "thread_id": "t", "seq": 3, "seq_to": 5})
        );
        assert!(Deltas::merge(&delta("r", 1, "a"), &delta("r", 3, "b")).is_none());
    }

    #[test]
    fn cuts_off_deltas_already_sent() {
        let mut d = Deltas::merge(&delta("r", 3, "Hel"), &delta("r", 4, "lo ")).unwrap();
        assert!(d.absorb(&delta("r", 5, "world")));
        assert!(d.skip_through(2), "nothing sent yet");
        assert!(d.skip_through(3));
        let v: Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(
            (v["delta"].as_str(), v["seq"].as_i64()),
            (Some("lo world"), Some(4))
        );
        assert!(d.skip_through(4));
        let v: Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(v["delta"], "world");
        assert!(
            v.get("seq_to").is_none(),
            "one delta is written as stored: {v}"
        );
        assert!(!d.skip_through(5), "all sent");
    }
}
