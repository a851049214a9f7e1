//! The store's data types and the pure helpers both databases share: ids, timestamps,
//! thread titles. Turning an event body into the exact JSON text clients receive is
//! `crate::wire`'s sealing.

use crate::wire::{ErrorCode, EventBody, EventRecord};
use rand::Rng;
use serde_json::{Map, json};

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

/// The columns both databases' `list_threads` select, in this order.
pub(crate) type ThreadColumns = (String, String, String, String, i64);

impl ThreadSummary {
    /// One `list_threads` row, read the same way on SQLite and Postgres.
    pub(crate) fn from_columns(row: ThreadColumns) -> Self {
        let (thread_id, title, created_at, updated_at, last_seq) = row;
        Self {
            thread_id,
            title,
            created_at,
            updated_at,
            last_seq,
        }
    }
}

impl OpenRun {
    /// One `open_runs` row: thread id, then run id.
    pub(crate) fn from_columns((thread_id, run_id): (String, String)) -> Self {
        Self { thread_id, run_id }
    }
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
}
