//! The earlier turns of the thread a model is given as context: the last
//! `history_messages` stored messages before the one being answered, newest kept first
//! when they do not all fit in `history_max_bytes`.
//!
//! Stored messages are the user's texts and the assistants' final answers; the tool calls
//! of earlier turns are not messages of the thread, so they reach the model only as the
//! answers that used them (a form every OpenAI-compatible server accepts).

use super::super::Agent;
use super::super::context::RunContext;
use super::super::provider::ChatMessage;

/// The context messages, oldest first. A history that cannot be read leaves the model
/// without context rather than failing the run (logged).
pub(super) async fn earlier(agent: &Agent, ctx: &RunContext) -> Vec<ChatMessage> {
    let limit = agent.history_messages as usize;
    // One more: the newest stored message is normally the one this run answers.
    let mut rows = match ctx.history.recent_messages(limit + 1).await {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(run_id = %ctx.run_id, %error, "thread history unavailable; the model gets no context");
            return Vec::new();
        }
    };
    if rows
        .last()
        .is_some_and(|(role, content)| role == "user" && *content == ctx.content)
    {
        rows.pop();
    }
    let skip = rows.len().saturating_sub(limit);
    select(rows.into_iter().skip(skip), agent.history_max_bytes)
}

/// Keeps the newest messages whose texts fit in `max_bytes` together; empty answers
/// (runs that failed before any text) are left out.
fn select(
    rows: impl DoubleEndedIterator<Item = (String, String)>,
    max_bytes: usize,
) -> Vec<ChatMessage> {
    let mut kept = Vec::new();
    let mut used = 0;
    for (role, content) in rows.rev() {
        if content.is_empty() {
            continue;
        }
        used += content.len();
        if used > max_bytes {
            break;
        }
        kept.push(match role.as_str() {
            "user" => ChatMessage::User { content },
            _ => ChatMessage::Assistant {
                content,
                tool_calls: Vec::new(),
            },
        });
    }
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(texts: &[(&str, &str)]) -> Vec<(String, String)> {
        texts
            .iter()
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn keeps_the_newest_that_fit_and_skips_empty_answers() {
        let history = rows(&[
            ("user", "first question, long"),
            ("assistant", "first answer"),
            ("user", "second"),
            ("assistant", ""),
            ("user", "third"),
        ]);
        let kept = select(history.into_iter(), 30);
        assert_eq!(
            kept,
            vec![
                ChatMessage::Assistant {
                    content: "first answer".into(),
                    tool_calls: Vec::new()
                },
                ChatMessage::User {
                    content: "second".into()
                },
                ChatMessage::User {
                    content: "third".into()
                },
            ]
        );
    }
}
