//! What the scripted provider reads in a user message: test hooks and tool intents.
//!
//! Deliberately simple keyword and character-class rules; the point is a deterministic
//! agent that exercises every path of the runner, not language understanding.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::{Value, json};

use crate::agent::tools::{FAIL_TOOL, SLOW_TOOL};

/// `[[fail_tool]]`, `[[slow_tool]]`, `[[slow]]`, `[[slow:<ms>]]`, `[[deltas:<n>]]` and `[[pad:<bytes>]]`.
/// A static, but a
/// compiled pattern only: nothing per user.
static HOOK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[\[(fail_tool|slow_tool|slow|deltas|pad)(?::(\d{1,7}))?\]\]")
        .expect("valid hook pattern")
});

/// `[[call:NAME]]` and `[[call:NAME {json arguments}]]`: call any tool by name, e.g. a
/// declared `[tools.NAME]`. The runner still refuses a tool the agent does not have.
static CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[\[call:([A-Za-z0-9_-]{1,64})(?:\s+(\{.*?\}))?\]\]").expect("valid call pattern")
});

/// One thing the message asks for that needs a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Evaluate this expression.
    Calculate(String),
    /// Tell the time.
    Clock,
    /// Recall the thread.
    History,
    /// Test hook: call the failing tool.
    FailHook,
    /// Test hook: call the tool that outlives its timeout.
    SlowHook,
    /// `[[call:NAME {…}]]`: call this tool with these arguments (a JSON object, or the
    /// text as given when it is not JSON, so the tool refuses it).
    Call(String, Value),
}

impl Intent {
    /// The tool that serves it.
    pub fn tool(&self) -> &str {
        match self {
            Self::Calculate(_) => "calculator",
            Self::Clock => "clock",
            Self::History => "thread_history",
            Self::FailHook => FAIL_TOOL,
            Self::SlowHook => SLOW_TOOL,
            Self::Call(tool, _) => tool,
        }
    }

    /// Arguments for the tool call.
    pub fn arguments(&self) -> Value {
        match self {
            Self::Calculate(expression) => json!({"expression": expression}),
            Self::History => json!({"limit": 10}),
            Self::Call(_, arguments) => arguments.clone(),
            _ => json!({}),
        }
    }

    /// A phrase for the plan ("evaluate `2+2`").
    pub fn purpose(&self) -> String {
        match self {
            Self::Calculate(expression) => format!("evaluate `{expression}`"),
            Self::Clock => "read the current time".into(),
            Self::History => "look up this thread's earlier messages".into(),
            Self::FailHook => "exercise a failing tool (test hook)".into(),
            Self::SlowHook => "exercise a tool that times out (test hook)".into(),
            Self::Call(tool, _) => format!("call `{tool}` as asked"),
        }
    }
}

/// The scripted provider's reading of one user message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Tool intents, in the order the calls are made.
    pub intents: Vec<Intent>,
    /// Delay between streamed chunks, when `[[slow]]` asked for one.
    pub slow: Option<Duration>,
    /// The message with the hooks removed, trimmed.
    pub text: String,
    /// Test hook `[[deltas:<n>]]`: answer with exactly this many deltas, nothing else.
    pub deltas: Option<u32>,
    /// Test hook `[[pad:<bytes>]]`: pad each of those deltas with this many `.`.
    pub pad: usize,
}

/// Reads `content`; `default_slow` is the delay of a bare `[[slow]]`.
pub fn plan(content: &str, default_slow: Duration) -> Plan {
    let mut slow = None;
    let mut deltas = None;
    let mut pad = 0;
    let mut hooks = Vec::new();
    // Every hook starts with `[[`: most messages skip the pattern (it ran twice a run,
    // about a tenth of the scripted agent's instructions).
    let text = if content.contains("[[call:") {
        calls(content, &mut hooks)
    } else {
        content.to_string()
    };
    let content = text.as_str();
    let text = if content.contains("[[") {
        for found in HOOK.captures_iter(content) {
            match &found[1] {
                "fail_tool" => hooks.push(Intent::FailHook),
                "slow_tool" => hooks.push(Intent::SlowHook),
                "deltas" => deltas = found.get(2).and_then(|m| m.as_str().parse().ok()),
                "pad" => {
                    pad = found
                        .get(2)
                        .and_then(|m| m.as_str().parse().ok())
                        .unwrap_or(0)
                }
                _ => {
                    let ms = found.get(2).and_then(|m| m.as_str().parse().ok());
                    slow = Some(ms.map_or(default_slow, Duration::from_millis));
                }
            }
        }
        HOOK.replace_all(content, "").trim().to_string()
    } else {
        content.trim().to_string()
    };
    let lower = text.to_lowercase();
    let has_word = |options: &[&str]| {
        lower
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| options.contains(&w))
    };

    let mut intents = Vec::new();
    if let Some(expression) = find_expression(&text) {
        intents.push(Intent::Calculate(expression));
    }
    if has_word(&["time", "date", "clock"]) {
        intents.push(Intent::Clock);
    }
    if has_word(&["history", "earlier"]) || lower.contains("what did i say") {
        intents.push(Intent::History);
    }
    intents.extend(hooks);
    Plan {
        intents,
        slow,
        text,
        deltas,
        pad,
    }
}

/// Reads the `[[call:…]]` hooks into `hooks`; the message without them.
fn calls(content: &str, hooks: &mut Vec<Intent>) -> String {
    for found in CALL.captures_iter(content) {
        let arguments = match found.get(2) {
            None => json!({}),
            Some(raw) => serde_json::from_str(raw.as_str())
                .unwrap_or_else(|_| Value::String(raw.as_str().to_string())),
        };
        hooks.push(Intent::Call(found[1].to_string(), arguments));
    }
    CALL.replace_all(content, "").into_owned()
}

/// The first run of arithmetic characters that has a digit and an operator between two
/// operands, e.g. `12*(3+4)` in "what is 12*(3+4)?". A lone `-5` or `3-day` is not one.
fn find_expression(text: &str) -> Option<String> {
    let arithmetic = |c: char| c.is_ascii_digit() || " .+-*/%^()".contains(c);
    text.split(|c: char| !arithmetic(c))
        .map(|run| run.trim().trim_end_matches('.').trim())
        .find(|run| {
            let inner = run.get(1..run.len().saturating_sub(1)).unwrap_or("");
            run.chars().any(|c| c.is_ascii_digit())
                && inner.contains(['+', '-', '*', '/', '%', '^'])
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = Duration::from_millis(250);

    #[test]
    fn finds_expressions_but_not_hyphenated_words() {
        let calc = |s: &str| plan(s, SLOW).intents;
        assert_eq!(
            calc("what is 12*(3+4)?"),
            [Intent::Calculate("12*(3+4)".into())]
        );
        assert_eq!(
            calc("compute 2 ^ 10."),
            [Intent::Calculate("2 ^ 10".into())]
        );
        assert_eq!(calc("and 2+*3"), [Intent::Calculate("2+*3".into())]);
        assert!(calc("a 3-day trip for -5 people with gpt-4").is_empty());
        assert!(calc("hello there").is_empty());
    }

    #[test]
    fn finds_keywords_as_whole_words() {
        let intents = |s: &str| plan(s, SLOW).intents;
        assert_eq!(intents("What TIME is it?"), [Intent::Clock]);
        assert_eq!(intents("today's date please"), [Intent::Clock]);
        assert!(intents("a timeout happened").is_empty());
        assert_eq!(intents("What did I say earlier?"), [Intent::History]);
        assert_eq!(intents("what did i say"), [Intent::History]);
        assert_eq!(
            intents("time and 1+1 and history"),
            [
                Intent::Calculate("1+1".into()),
                Intent::Clock,
                Intent::History
            ]
        );
    }

    #[test]
    fn reads_and_strips_test_hooks() {
        let p = plan("hi [[fail_tool]] [[slow_tool]] [[slow]]", SLOW);
        assert_eq!(p.intents, [Intent::FailHook, Intent::SlowHook]);
        assert_eq!(p.slow, Some(SLOW));
        assert_eq!(p.text, "hi");
        assert_eq!(
            plan("[[slow:40]] 1+1", SLOW).slow,
            Some(Duration::from_millis(40))
        );
        assert_eq!(plan("1+1", SLOW).slow, None);
    }

    #[test]
    fn reads_call_hooks_with_and_without_arguments() {
        let p = plan(
            r#"go [[call:weather {"city": "Paris", "deep": {"a": 1}}]] [[call:docs-search]] [[call:x {oops}]]"#,
            SLOW,
        );
        assert_eq!(
            p.intents,
            [
                Intent::Call("weather".into(), json!({"city": "Paris", "deep": {"a": 1}})),
                Intent::Call("docs-search".into(), json!({})),
                Intent::Call("x".into(), json!("{oops}")),
            ]
        );
        assert_eq!(p.text, "go");
    }
}
