//! Tests of the scripted provider's two steps, driven with hand-built conversations.

use serde_json::json;

use super::*;

const SLOW: Duration = Duration::from_millis(250);

fn specs(names: &[&'static str]) -> Vec<ToolSpec> {
    names
        .iter()
        .map(|name| ToolSpec {
            name,
            description: "",
            parameters: json!({}),
        })
        .collect()
}

fn user(content: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::User {
        content: content.into(),
    }]
}

fn text_of(chunks: &[Chunk]) -> String {
    chunks
        .iter()
        .filter_map(|c| match c {
            Chunk::Delta(d) => Some(d.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn first_step_plans_and_calls_enabled_tools_only() {
    let tools = specs(&["calculator"]);
    let (chunks, slow) = respond(&user("what is 1+1 and the time? [[slow]]"), &tools, SLOW);
    assert_eq!(slow, Some(SLOW));
    assert_eq!(
        chunks,
        [
            Chunk::Thinking(
                "Plan: evaluate `1+1` with `calculator`; read the current time (but `clock` is not enabled).".into()
            ),
            Chunk::ToolCall(ToolCall {
                call_id: "call_1".into(),
                name: "calculator".into(),
                arguments: json!({"expression": "1+1"}),
            }),
            Chunk::Finished,
        ]
    );
}

#[test]
fn second_step_answers_from_results_and_names_disabled_tools() {
    let tools = specs(&["calculator"]);
    let mut conversation = user("what is 1+1 and the time?");
    conversation.push(ChatMessage::Assistant {
        content: String::new(),
        tool_calls: Vec::new(),
    });
    conversation.push(ChatMessage::Tool {
        call_id: "call_1".into(),
        name: "calculator".into(),
        outcome: Ok(json!({"expression": "1+1", "value": 2})),
    });
    let (chunks, _) = respond(&conversation, &tools, SLOW);
    assert!(
        chunks
            .iter()
            .all(|c| !matches!(c, Chunk::ToolCall(_) | Chunk::Thinking(_)))
    );
    assert!(chunks.len() > 2, "the answer is streamed in several deltas");
    assert_eq!(
        text_of(&chunks),
        "1+1 = 2. I would read the current time, but the `clock` tool is not enabled for this agent."
    );
}

#[test]
fn no_intent_gets_an_echo_and_the_enabled_capabilities() {
    let (chunks, _) = respond(&user("hello"), &specs(&["clock"]), SLOW);
    assert_eq!(
        chunks[0],
        Chunk::Thinking("No tool needed: I will answer directly.".into())
    );
    assert_eq!(
        text_of(&chunks),
        "You said: \"hello\". I am a scripted agent; I can tell the current time."
    );
    let (chunks, _) = respond(&user("hello"), &[], SLOW);
    assert!(text_of(&chunks).ends_with("so I can only echo your message."));
}

#[test]
fn word_groups_concatenate_back_to_the_text() {
    let text = "one two three four five six seven eight nine";
    let groups = word_groups(text);
    assert_eq!(groups.len(), 3);
    assert_eq!(groups.concat(), text);
}
