//! Rules for `[tools.NAME]`: names a model can call, the keys each kind uses, `parameters`
//! a valid JSON Schema of an object, https endpoints outside development and test, MCP
//! `allow` lists, the scope rule (a tool given the user is fed by the run; an MCP
//! session is process-wide and cannot be), and no two tools of one name in an agent.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ctx::Ctx;
use super::schema_walk::closest;
use crate::agent::BUILTIN_TOOLS;
use crate::config::raw::USER_CONTEXT;
use crate::config::raw::{ToolKind, ToolSection};
use crate::keypath::{KeyPath, kp};

/// Whether `name` is one a model can call a tool by (OpenAI's function-name rule).
pub fn callable_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Runs the tool rules.
pub fn check(cx: &mut Ctx) {
    let raw = cx.raw;
    for (name, tool) in &raw.tools {
        let at = kp("tools").key(name.as_str());
        check_name(cx, name, &at);
        check_keys(cx, tool, &at);
        check_url(cx, tool, &at);
        check_needs(cx, tool, &at);
        match tool.kind {
            ToolKind::Http => check_parameters(cx, tool, &at),
            ToolKind::Mcp => check_allow(cx, tool, &at),
        }
        if !raw.agents.iter().any(|a| a.tools.contains(name)) {
            cx.warn(
                "W_TOOL_UNUSED",
                at.clone(),
                format!("tool `{name}` is declared but no agent lists it"),
                format!("add \"{name}\" to an agent's tools, or remove [tools.{name}]"),
            );
        }
    }
    check_clashes(cx);
}

fn check_name(cx: &mut Ctx, name: &str, at: &KeyPath) {
    if BUILTIN_TOOLS.contains(&name) {
        cx.error(
            "E_TOOL_NAME",
            at.clone(),
            format!("[tools.{name}] has the name of a built-in tool"),
            "give the declaration another name; built-in tools need no declaration",
        );
    } else if !callable_name(name) {
        cx.error(
            "E_TOOL_NAME",
            at.clone(),
            format!("tool name `{name}` is not one a model can call"),
            "use 1-64 letters, digits, `_` or `-`",
        );
    }
}

/// A key and whether the declaration sets it.
type KeySet<'a> = (&'a str, bool);

/// Keys of the other kind are refused (nothing would obey them); required ones missing.
fn check_keys(cx: &mut Ctx, t: &ToolSection, at: &KeyPath) {
    let kind = t.kind.as_str();
    let (required, foreign): (&[KeySet], &[KeySet]) = match t.kind {
        ToolKind::Http => (
            &[
                ("description", t.description.is_some()),
                ("parameters", t.parameters.is_some()),
            ],
            &[("allow", !t.allow.is_empty())],
        ),
        ToolKind::Mcp => (
            &[],
            &[
                ("description", t.description.is_some()),
                ("parameters", t.parameters.is_some()),
            ],
        ),
    };
    for (key, _) in required.iter().filter(|(_, set)| !set) {
        cx.error(
            "E_TOOL_KEY",
            at.clone(),
            format!(
                "a tool of kind {kind} needs `{key}`: the model is told what it does and takes"
            ),
            format!("add {key} = …"),
        );
    }
    for (key, _) in foreign.iter().filter(|(_, set)| *set) {
        cx.error(
            "E_TOOL_KEY",
            at.key(*key),
            format!("`{key}` does not apply to a tool of kind {kind}: nothing would obey it"),
            match t.kind {
                ToolKind::Mcp => format!("remove `{key}`: the MCP server describes its own tools"),
                ToolKind::Http => format!("remove `{key}`"),
            },
        );
    }
}

fn check_url(cx: &mut Ctx, t: &ToolSection, at: &KeyPath) {
    let Err(why) = crate::auth::check_key_url(&t.url, cx.relaxed()) else {
        return;
    };
    let why = why.replace("keys fetched", "tool calls");
    cx.error(
        "E_TOOL_URL",
        at.key("url"),
        format!("`{}` {why}", t.url),
        "use https://host/path (http:// only in development and test)",
    );
}

/// `needs` may only name `user_context`, and only a run-fed tool may have it.
fn check_needs(cx: &mut Ctx, t: &ToolSection, at: &KeyPath) {
    for (i, need) in t.needs.iter().flatten().enumerate() {
        let at = at.key("needs").index(i);
        if need != USER_CONTEXT {
            cx.error(
                "E_TOOL_NEEDS",
                at,
                format!("a tool can only need `{USER_CONTEXT}`, not `{need}`"),
                format!("remove \"{need}\""),
            );
        } else if t.kind == ToolKind::Mcp {
            cx.error(
                "E_SCOPE",
                at,
                format!("an MCP tool needs `{USER_CONTEXT}`, but its server session is process-scope, shared by every user: it cannot be given the run's user"),
                format!("drop `{USER_CONTEXT}` from its needs, or serve the tool as kind = \"http\" (which receives X-Portcullis-User per call)"),
            );
        }
    }
}

fn check_parameters(cx: &mut Ctx, t: &ToolSection, at: &KeyPath) {
    let Some(parameters) = &t.parameters else {
        return;
    };
    let schema = Value::Object(parameters.clone());
    let at = at.key("parameters");
    if let Err(e) = jsonschema::validator_for(&schema) {
        cx.error(
            "E_TOOL_PARAMETERS",
            at,
            format!("`parameters` is not a valid JSON Schema: {e}"),
            "write a JSON Schema object, e.g. { type = \"object\", properties = { city = { type = \"string\" } } }",
        );
    } else if schema.get("type") != Some(&Value::from("object")) {
        cx.error(
            "E_TOOL_PARAMETERS",
            at,
            "`parameters` must describe an object (type = \"object\"): tool arguments are a JSON object",
            "set type = \"object\" and list the arguments under properties",
        );
    }
}

fn check_allow(cx: &mut Ctx, t: &ToolSection, at: &KeyPath) {
    if t.allow.is_empty() {
        return cx.error(
            "E_TOOL_ALLOW",
            at.clone(),
            "an MCP tool with no `allow` list: agents could call none of its server's tools",
            "add allow = [\"<tool name on the server>\", …]",
        );
    }
    for (i, name) in t.allow.iter().enumerate() {
        let at = at.key("allow").index(i);
        if name.trim().is_empty() {
            cx.error(
                "E_TOOL_ALLOW",
                at,
                "an empty entry in `allow` names no tool",
                "remove it, or write the server's tool name",
            );
        } else if !callable_name(name) {
            cx.error(
                "E_TOOL_ALLOW",
                at,
                format!("`{name}` is not a name a model can call a tool by"),
                "only tools named with 1-64 letters, digits, `_` or `-` can be offered to a model",
            );
        } else if t.allow[..i].contains(name) {
            cx.error(
                "E_TOOL_ALLOW",
                at,
                format!("`{name}` is allowed twice"),
                "list each tool once",
            );
        }
    }
}

/// Model-visible names an agent's tool entry gives: its own name, or an MCP server's
/// allowed tools.
fn exposed<'a>(tools: &'a BTreeMap<String, ToolSection>, entry: &'a str) -> Vec<&'a str> {
    match tools.get(entry) {
        Some(t) if t.kind == ToolKind::Mcp => t.allow.iter().map(String::as_str).collect(),
        _ => vec![entry],
    }
}

/// Two of an agent's tools the model would call by one name: only one could ever run.
/// Also unknown tool entries with a suggestion among the declared names.
fn check_clashes(cx: &mut Ctx) {
    let raw = cx.raw;
    for (i, agent) in raw.agents.iter().enumerate() {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (j, entry) in agent.tools.iter().enumerate() {
            for name in exposed(&raw.tools, entry) {
                if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                    cx.error(
                        "E_TOOL_CLASH",
                        kp(&format!("agents[{i}].tools[{j}]")),
                        format!(
                            "agent `{}` gets two tools named `{name}` (from `{first}` and `{entry}`); the model could only ever call one",
                            agent.name
                        ),
                        "remove one, or drop the name from an MCP allow list",
                    );
                }
                seen.push((name, entry));
            }
        }
    }
}

/// The hint for an agent's unknown tool entry: the closest built-in or declared name.
pub fn unknown_hint(cx: &Ctx, entry: &str) -> String {
    let names: Vec<&str> = BUILTIN_TOOLS
        .iter()
        .copied()
        .chain(cx.raw.tools.keys().map(String::as_str))
        .collect();
    closest(entry, names.iter().copied())
        .map(|c| format!("did you mean `{c}`?"))
        .unwrap_or_else(|| {
            format!(
                "available tools: {} (declare others under [tools.NAME])",
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::callable_name;

    #[test]
    fn callable_names_are_what_a_model_can_call() {
        assert!(callable_name("search_docs"));
        assert!(callable_name("get-page2"));
        assert!(callable_name(&"a".repeat(64)));
        assert!(!callable_name(""));
        assert!(!callable_name(&"a".repeat(65)));
        assert!(!callable_name("docs.search"));
        assert!(!callable_name("two words"));
    }
}
