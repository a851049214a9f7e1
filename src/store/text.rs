//! Text no database here may see as it is: U+0000 (NUL).
//!
//! Postgres refuses U+0000 in every text value (SQLSTATE 22021) while SQLite stores it,
//! and both databases must answer every store call alike. So the store decides once,
//! here, before either sees the text:
//! - text a client sent (a message's content, its client id, the agent it names, the
//!   user id of its token) with U+0000 is refused as `BadData` (`BAD_MESSAGE`, not
//!   retryable): the client can remove it, and nothing is stored;
//! - an id with U+0000 names nothing (no id the store makes has one): an unknown thread
//!   or run;
//! - U+0000 in a reply the server produced (a model's answer) is stored, and sent in the
//!   run's `agent_completed`, as U+FFFD, so the answer is kept.
//!
//! Event bodies need nothing: they are JSON text, which writes U+0000 as `\u0000`.

use std::borrow::Cow;

use super::error::StoreError;
use super::model::NewMessage;
use crate::wire::EventRecord;

/// Whether `text` holds U+0000.
pub(crate) fn has_nul(text: &str) -> bool {
    text.as_bytes().contains(&0)
}

/// Refuses a new message with U+0000 in any of its texts (`BadData`), then one that
/// names a thread id with U+0000 (`ThreadNotFound`, as for any unknown thread).
pub(crate) fn check_message(msg: &NewMessage<'_>) -> Result<(), StoreError> {
    let texts = [
        ("content", msg.content),
        ("client id (`id`)", msg.client_id),
        ("agent name", msg.agent),
        ("user id (the token's `sub`)", msg.user_id),
    ];
    if let Some((what, _)) = texts.iter().find(|(_, text)| has_nul(text)) {
        return Err(StoreError::BadData(format!(
            "the message's {what} contains U+0000 (NUL), which cannot be stored; remove it"
        )));
    }
    match msg.thread_id {
        Some(id) if has_nul(id) => Err(StoreError::ThreadNotFound),
        _ => Ok(()),
    }
}

/// An append naming ids with U+0000 (no id the store makes has one) answers what both
/// databases answer for an unknown thread, or for a run that is not running there.
pub(crate) fn check_append(thread_id: &str, events: &[EventRecord]) -> Result<(), StoreError> {
    if has_nul(thread_id) {
        Err(StoreError::ThreadNotFound)
    } else if events.iter().any(|e| has_nul(&e.run_id)) {
        Err(StoreError::RunNotActive)
    } else {
        Ok(())
    }
}

/// A finish naming ids with U+0000 answers what both databases answer for an unknown run.
pub(crate) fn check_finish(thread_id: &str, run_id: &str) -> Result<(), StoreError> {
    if has_nul(thread_id) || has_nul(run_id) {
        Err(StoreError::RunNotActive)
    } else {
        Ok(())
    }
}

/// A reply as it is stored: every U+0000 replaced by U+FFFD (borrowed when there is none).
pub(crate) fn stored_reply(reply: &str) -> Cow<'_, str> {
    if has_nul(reply) {
        Cow::Owned(reply.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(content: &'a str, thread_id: Option<&'a str>) -> NewMessage<'a> {
        NewMessage {
            user_id: "alice",
            client_id: "c1",
            thread_id,
            content,
            agent: "assistant",
        }
    }

    #[test]
    fn nul_in_client_text_is_bad_data_and_in_a_thread_id_an_unknown_thread() {
        assert!(check_message(&message("hello", Some("t_1"))).is_ok());
        let refused = check_message(&message("a\0b", Some("t\0"))).unwrap_err();
        assert!(
            matches!(&refused, StoreError::BadData(why) if why.contains("content")),
            "{refused:?}"
        );
        let unknown = check_message(&message("hello", Some("t_\0")));
        assert!(matches!(unknown, Err(StoreError::ThreadNotFound)));
        let user = NewMessage {
            user_id: "al\0ice",
            ..message("hello", None)
        };
        assert!(
            matches!(check_message(&user), Err(StoreError::BadData(why)) if why.contains("sub"))
        );
    }

    #[test]
    fn replies_keep_their_text_with_nul_replaced() {
        assert!(matches!(stored_reply("plain"), Cow::Borrowed("plain")));
        assert_eq!(stored_reply("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
    }
}
