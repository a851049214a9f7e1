//! The decoder against chunks as OpenAI-compatible servers stream them.

use serde_json::json;

use super::*;

fn decode(lines: &[&str]) -> Result<Vec<Chunk>, ProviderError> {
    let mut decoder = Decoder::new("fallback-model");
    let mut out = Vec::new();
    for line in lines {
        decoder.data(line, &mut out)?;
    }
    if !decoder.done() {
        decoder.finish(&mut out)?;
    }
    Ok(out)
}

#[test]
fn tool_calls_are_reassembled_by_index_from_fragments() {
    let chunks = decode(&[
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"calculator","arguments":""}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"clock","arguments":""}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"expre"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ssion\": \"2*21\"}"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19},"model":"m-1"}"#,
        "[DONE]",
    ])
    .unwrap();
    assert_eq!(
        chunks,
        vec![
            Chunk::Usage(Usage {
                model: "m-1".into(),
                prompt_tokens: 12,
                completion_tokens: 7
            }),
            Chunk::ToolCall(ToolCall {
                call_id: "call_a".into(),
                name: "calculator".into(),
                arguments: json!({"expression": "2*21"}),
            }),
            Chunk::ToolCall(ToolCall {
                call_id: "call_b".into(),
                name: "clock".into(),
                arguments: json!({}),
            }),
            Chunk::Finished,
        ]
    );
}

#[test]
fn content_and_reasoning_fields_become_deltas_and_thinking() {
    let chunks = decode(&[
        r#"{"choices":[{"delta":{"reasoning_content":"let me see"}}]}"#,
        r#"{"choices":[{"delta":{"reasoning":"ollama style"}}]}"#,
        r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
        r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
        "[DONE]",
    ])
    .unwrap();
    assert_eq!(
        chunks,
        vec![
            Chunk::Thinking("let me see".into()),
            Chunk::Thinking("ollama style".into()),
            Chunk::Delta("Hel".into()),
            Chunk::Delta("lo".into()),
            Chunk::Finished,
        ]
    );
}

#[test]
fn every_broken_ending_has_its_code() {
    let code = |lines: &[&str]| decode(lines).unwrap_err().code;
    // Cut before any finish_reason or [DONE].
    assert_eq!(
        code(&[r#"{"choices":[{"delta":{"content":"Hel"}}]}"#]),
        codes::MODEL_STREAM_BROKEN
    );
    assert_eq!(code(&["{not json"]), codes::MODEL_BAD_RESPONSE);
    assert_eq!(
        code(&[
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"length"}]}"#,
            "[DONE]"
        ]),
        codes::MODEL_OUTPUT_LIMIT
    );
    assert_eq!(
        code(&[r#"{"choices":[{"delta":{},"finish_reason":"content_filter"}]}"#]),
        codes::MODEL_CONTENT_FILTERED
    );
    assert_eq!(
        code(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#
        ]),
        codes::MODEL_BAD_RESPONSE
    );
}

#[test]
fn arguments_that_are_not_json_stay_text_for_the_tool_to_refuse() {
    assert_eq!(
        arguments("{\"a\": 1".into()),
        Value::String("{\"a\": 1".into())
    );
    assert_eq!(arguments("  ".into()), json!({}));
}
