//! What clients send in `portcullis.v1` (docs/PROTOCOL.md §2): the messages, the one
//! parser the server reads them with, and their text, so clients (the probe, the load
//! generator, the tests) build messages from the type instead of copying its JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Protocol name selected as the subprotocol and announced in `connection_established`.
pub const PROTOCOL: &str = "portcullis.v1";

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Ask an agent.
    UserMessage {
        /// Client-chosen idempotency key.
        id: String,
        /// The text.
        content: String,
        /// Thread to continue; absent starts a new one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<String>,
        /// Agent name; absent picks the default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    /// Stop a run.
    Cancel {
        /// The run.
        run_id: String,
    },
    /// Replay a thread's stored events after a seq, then continue live.
    Resume {
        /// The thread.
        thread_id: String,
        /// Replay events with a larger seq.
        #[serde(default)]
        after_seq: i64,
    },
    /// First-message auth or token refresh.
    Auth {
        /// The JWT.
        token: String,
    },
    /// Application-level ping.
    Ping {},
}

impl ClientMessage {
    /// Every `type` a client may send.
    pub const KINDS: [&'static str; 5] = ["user_message", "cancel", "resume", "auth", "ping"];

    /// This message's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UserMessage { .. } => "user_message",
            Self::Cancel { .. } => "cancel",
            Self::Resume { .. } => "resume",
            Self::Auth { .. } => "auth",
            Self::Ping {} => "ping",
        }
    }

    /// A `user_message`; no `thread_id` starts a new thread, no `agent` picks the default.
    pub fn user_message(
        id: &str,
        content: &str,
        thread_id: Option<&str>,
        agent: Option<&str>,
    ) -> Self {
        Self::UserMessage {
            id: id.to_string(),
            content: content.to_string(),
            thread_id: thread_id.map(str::to_string),
            agent: agent.map(str::to_string),
        }
    }

    /// A `resume` of `thread_id` after `after_seq`.
    pub fn resume(thread_id: &str, after_seq: i64) -> Self {
        Self::Resume {
            thread_id: thread_id.to_string(),
            after_seq,
        }
    }

    /// A `cancel` of `run_id`.
    pub fn cancel(run_id: &str) -> Self {
        Self::Cancel {
            run_id: run_id.to_string(),
        }
    }

    /// An `auth` carrying `token`.
    pub fn auth(token: &str) -> Self {
        Self::Auth {
            token: token.to_string(),
        }
    }

    /// The message as the text of a frame: `type` first, absent options left out.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a client message always serializes")
    }

    /// The message as a JSON value (a map: its keys come out sorted).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a client message always serializes")
    }
}

/// Why a text frame is not a valid client message.
pub enum ParseError {
    /// Not JSON.
    BadJson(String),
    /// JSON, but the `type` is unknown.
    UnknownType(String),
    /// A known type with missing or wrong fields.
    BadMessage(String),
}

/// Parses a text frame. A valid message is read straight into its type; anything else
/// is read again as a `Value` to say precisely what is wrong with it.
pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
    if let Ok(message) = serde_json::from_str(text) {
        return Ok(message);
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| ParseError::BadJson(e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string);
    match kind.as_deref() {
        Some(kind) if ClientMessage::KINDS.contains(&kind) => {
            serde_json::from_value(value).map_err(|e| ParseError::BadMessage(e.to_string()))
        }
        Some(other) => Err(ParseError::UnknownType(other.to_string())),
        None => Err(ParseError::BadMessage(
            "a message needs a string `type`".into(),
        )),
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn parses_valid_messages_and_names_what_is_wrong_with_the_rest() {
        assert!(matches!(
            parse(r#"{"type":"user_message","id":"c1","content":"hi"}"#),
            Ok(ClientMessage::UserMessage {
                thread_id: None,
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping {})
        ));
        // A repeated key still resolves to the last one, as the parser always did.
        assert!(matches!(
            parse(r#"{"type":"cancel","run_id":"a","run_id":"b"}"#),
            Ok(ClientMessage::Cancel { run_id }) if run_id == "b"
        ));
        assert!(matches!(parse("{nope"), Err(ParseError::BadJson(_))));
        assert!(matches!(
            parse(r#"{"type":"shout"}"#),
            Err(ParseError::UnknownType(t)) if t == "shout"
        ));
        assert!(matches!(
            parse(r#"{"type":"user_message","id":"c1"}"#),
            Err(ParseError::BadMessage(m)) if m.contains("content")
        ));
        assert!(matches!(
            parse(r#"{"type":"ping","extra":1}"#),
            Err(ParseError::BadMessage(m)) if m.contains("extra")
        ));
        assert!(matches!(
            parse(r#"{"id":"x"}"#),
            Err(ParseError::BadMessage(_))
        ));
    }

    #[test]
    fn every_message_written_parses_back_to_itself() {
        let messages = [
            ClientMessage::user_message("c1", "hi \"there\"\n", None, None),
            ClientMessage::user_message("c2", "x", Some("t_1"), Some("helper")),
            ClientMessage::cancel("r_1"),
            ClientMessage::resume("t_1", 7),
            ClientMessage::auth("a.b.c"),
            ClientMessage::Ping {},
        ];
        for message in messages {
            let text = message.to_text();
            assert!(text.starts_with(r#"{"type":""#), "{text}");
            assert!(!text.contains("null"), "{text}");
            assert!(matches!(parse(&text), Ok(m) if m == message), "{text}");
            assert!(text.contains(&format!(r#""type":"{}""#, message.kind())));
            assert_eq!(
                message.to_json().to_string(),
                serde_json::from_str::<Value>(&text).unwrap().to_string()
            );
        }
        assert_eq!(ClientMessage::Ping {}.to_text(), r#"{"type":"ping"}"#);
        assert_eq!(
            ClientMessage::user_message("c1", "hi", None, None).to_text(),
            r#"{"type":"user_message","id":"c1","content":"hi"}"#
        );
    }
}
