//! Agent rules: at least one agent, exactly one default, known providers and tools, and
//! model-backed agents pointing at an `openai` service.

use super::ctx::Ctx;
use super::schema_walk::closest;
use crate::agent::BUILTIN_TOOLS;
use crate::config::raw::{AgentSection, ServiceKind};
use crate::keypath::{KeyPath, kp};

/// Providers the agent runtime knows.
pub const PROVIDERS: [&str; 2] = ["scripted", "openai"];

/// Runs the agent rules.
pub fn check(cx: &mut Ctx) {
    let agents = &cx.raw.agents;
    if agents.is_empty() {
        cx.error(
            "E_NO_AGENT",
            kp("agents"),
            "no [[agents]]: chat messages would have nowhere to go",
            "add [[agents]] name = \"assistant\", provider = \"scripted\", default = true",
        );
        return;
    }
    one_default(cx, agents);
    for (i, a) in agents.iter().enumerate() {
        let at = kp(&format!("agents[{i}]"));
        unique_name(cx, agents, i, &at);
        match a.provider.as_str() {
            "scripted" => scripted_in_production(cx, a, &at),
            "openai" => openai_service(cx, a, &at),
            other => unknown_provider(cx, a, other, &at),
        }
        known_tools(cx, a, &at);
    }
}

/// `E_AGENT_DEFAULT`: refuses several default agents, or several agents and no default,
/// since a new thread must go to exactly one agent.
fn one_default(cx: &mut Ctx, agents: &[AgentSection]) {
    let defaults: Vec<usize> = agents
        .iter()
        .enumerate()
        .filter(|(_, a)| a.default)
        .map(|(i, _)| i)
        .collect();
    if defaults.len() > 1 {
        cx.error(
            "E_AGENT_DEFAULT",
            kp(&format!("agents[{}].default", defaults[1])),
            format!("{} agents are marked default", defaults.len()),
            "mark exactly one agent default = true",
        );
    } else if defaults.is_empty() && agents.len() > 1 {
        cx.error(
            "E_AGENT_DEFAULT",
            kp("agents"),
            "several agents and none is the default",
            "mark exactly one agent default = true",
        );
    }
}

/// `E_AGENT_DUPLICATE`: refuses a name an earlier agent already has, since clients pick
/// agents by name.
fn unique_name(cx: &mut Ctx, agents: &[AgentSection], i: usize, at: &KeyPath) {
    let a = &agents[i];
    if agents[..i].iter().any(|o| o.name == a.name) {
        cx.error(
            "E_AGENT_DUPLICATE",
            at.key("name"),
            format!("agent name `{}` is used twice", a.name),
            "give each agent its own name",
        );
    }
}

/// `W_SCRIPTED_IN_PRODUCTION`: warns that the scripted demo provider is serving production.
fn scripted_in_production(cx: &mut Ctx, a: &AgentSection, at: &KeyPath) {
    if cx.production() {
        cx.warn(
            "W_SCRIPTED_IN_PRODUCTION",
            at.key("provider"),
            format!(
                "agent `{}` uses the scripted demo provider in production",
                a.name
            ),
            "use provider = \"openai\" with a model service",
        );
    }
}

/// `E_AGENT_SERVICE` / `E_AGENT_MODEL`: refuses an openai agent without a declared service
/// of kind openai, or without a model, since it could not make a single call.
fn openai_service(cx: &mut Ctx, a: &AgentSection, at: &KeyPath) {
    match &a.service {
        None => cx.error(
            "E_AGENT_SERVICE",
            at.key("provider"),
            format!(
                "agent `{}` uses provider openai but names no service",
                a.name
            ),
            "add service = \"<name of a services entry with kind = \\\"openai\\\">\"",
        ),
        Some(s) => match cx.raw.services.get(s) {
            Some(svc) if svc.kind == ServiceKind::Openai => {
                if a.model.is_none() {
                    cx.error(
                        "E_AGENT_MODEL",
                        at.clone(),
                        format!("agent `{}` names no model", a.name),
                        "add model = \"…\"",
                    );
                }
            }
            Some(_) => cx.error(
                "E_AGENT_SERVICE",
                at.key("service"),
                format!("service `{s}` is not of kind openai"),
                "point at a service with kind = \"openai\"",
            ),
            None => cx.error(
                "E_AGENT_SERVICE",
                at.key("service"),
                format!("agent `{}` uses unknown service `{s}`", a.name),
                "declare it under [services] with kind = \"openai\"",
            ),
        },
    }
}

/// `E_UNKNOWN_PROVIDER`: refuses a provider the agent runtime does not have.
fn unknown_provider(cx: &mut Ctx, a: &AgentSection, other: &str, at: &KeyPath) {
    let hint = closest(other, PROVIDERS)
        .map(|c| format!("did you mean `{c}`?"))
        .unwrap_or_else(|| format!("use one of: {}", PROVIDERS.join(", ")));
    cx.error(
        "E_UNKNOWN_PROVIDER",
        at.key("provider"),
        format!("agent `{}` has unknown provider `{other}`", a.name),
        hint,
    );
}

/// `E_UNKNOWN_TOOL`: refuses a tool that is neither built in nor declared under [tools].
fn known_tools(cx: &mut Ctx, a: &AgentSection, at: &KeyPath) {
    for (j, t) in a.tools.iter().enumerate() {
        if !BUILTIN_TOOLS.contains(&t.as_str()) && !cx.raw.tools.contains_key(t) {
            let hint = super::tools::unknown_hint(cx, t);
            cx.error(
                "E_UNKNOWN_TOOL",
                at.key("tools").index(j),
                format!("agent `{}` lists unknown tool `{t}`", a.name),
                hint,
            );
        }
    }
}
