//! Model rules: `openai` services (https outside development/test, a readable `ca_file`,
//! the API key from a variable outside development/test, model-only keys on other kinds),
//! agents' fallback chains (known agents, no cycles), and model-only agent keys on
//! scripted agents (which would be accepted and silently ignored otherwise).

use super::ctx::Ctx;
use crate::config::raw::{AgentSection, ServiceKind, ServiceSection};
use crate::keypath::{KeyPath, kp};

/// Runs the model rules.
pub fn check(cx: &mut Ctx) {
    let raw = cx.raw;
    for (name, svc) in &raw.services {
        let at = kp(&format!("services.{name}"));
        match svc.kind {
            ServiceKind::Openai => openai_service(cx, name, svc, &at),
            _ => unused_service_keys(cx, name, svc, &at),
        }
    }
    for (i, agent) in raw.agents.iter().enumerate() {
        let at = kp(&format!("agents[{i}]"));
        if agent.provider == "scripted" {
            unused_agent_keys(cx, agent, &at);
        }
        fallback(cx, i, &at);
    }
}

fn openai_service(cx: &mut Ctx, name: &str, svc: &ServiceSection, at: &KeyPath) {
    // The URL as served: inline, or the variable's value (absent under --no-env).
    let (url, key) = match (&svc.url, &svc.url_env) {
        (Some(u), _) => (Some(u.clone()), "url"),
        (None, Some(var)) => {
            let what = format!("URL of service `{name}`");
            (cx.env_var(at.key("url_env"), var, &what), "url_env")
        }
        (None, None) => (None, "url"),
    };
    if let Some(url) = url {
        if url.starts_with("http://") && !cx.relaxed() {
            cx.error(
                "E_MODEL_URL_INSECURE",
                at.key(key),
                format!(
                    "model service `{name}` uses plain http in {}: prompts and the API key would cross the network in clear",
                    cx.kind.as_str()
                ),
                "use an https:// URL (plain http is for a local model in development and test)",
            );
        }
    }
    if let Some(file) = &svc.ca_file {
        if let Err(e) = crate::tls::read_certs(&cx.config_dir.join(file)) {
            cx.error(
                "E_CA_FILE",
                at.key("ca_file"),
                e.to_string(),
                "give a PEM file of CA certificates (BEGIN CERTIFICATE), relative to the config directory",
            );
        }
    }
    match (&svc.api_key, &svc.api_key_env) {
        (Some(_), Some(_)) => cx.error(
            "E_SERVICE_KEY_CONFLICT",
            at.key("api_key"),
            format!("service `{name}` sets both api_key and api_key_env"),
            "keep api_key_env",
        ),
        (Some(_), None) if !cx.relaxed() => cx.error(
            "E_INLINE_SECRET",
            at.key("api_key"),
            format!(
                "inline API key of service `{name}` in {}: it would live in the repository",
                cx.kind.as_str()
            ),
            "use api_key_env = \"PORTCULLIS_MODEL_API_KEY\" and set that variable from your secret store",
        ),
        (None, Some(var)) => {
            cx.env_var(
                at.key("api_key_env"),
                var,
                &format!("API key of service `{name}`"),
            );
        }
        _ => {}
    }
}

/// Keys only `openai` services read.
fn unused_service_keys(cx: &mut Ctx, name: &str, svc: &ServiceSection, at: &KeyPath) {
    let set = [
        ("api_key", svc.api_key.is_some()),
        ("api_key_env", svc.api_key_env.is_some()),
        ("read_timeout_ms", svc.read_timeout_ms.is_some()),
        ("max_retries", svc.max_retries.is_some()),
        ("ca_file", svc.ca_file.is_some()),
    ];
    for (key, _) in set.iter().filter(|(_, set)| *set) {
        cx.error(
            "E_SERVICE_OPTION_UNUSED",
            at.key(*key),
            format!("service `{name}` is not kind openai; `{key}` would be ignored"),
            format!("remove `{key}` (only model services read it)"),
        );
    }
}

/// Keys only model providers read.
fn unused_agent_keys(cx: &mut Ctx, agent: &AgentSection, at: &KeyPath) {
    let set = [
        ("service", agent.service.is_some()),
        ("model", agent.model.is_some()),
        ("system_prompt", agent.system_prompt.is_some()),
        ("history_messages", agent.history_messages.is_some()),
        ("max_output_tokens", agent.max_output_tokens.is_some()),
        ("temperature", agent.temperature.is_some()),
        // Only a model's failure (unavailable, rate limited) hands a run to the fallback.
        ("fallback", agent.fallback.is_some()),
    ];
    for (key, _) in set.iter().filter(|(_, set)| *set) {
        cx.error(
            "E_AGENT_OPTION_UNUSED",
            at.key(*key),
            format!(
                "agent `{}` uses the scripted provider, which does not read `{key}`",
                agent.name
            ),
            format!("remove `{key}`, or use provider = \"openai\""),
        );
    }
}

/// The fallback chain starting at agent `i`: every name an agent, and never back to `i`
/// (a longer loop elsewhere is reported at the agents on it).
fn fallback(cx: &mut Ctx, i: usize, at: &KeyPath) {
    let agents = &cx.raw.agents;
    let Some(first) = &agents[i].fallback else {
        return;
    };
    let mut path = vec![agents[i].name.as_str()];
    let mut next = Some(first);
    while let Some(name) = next {
        let Some(j) = agents.iter().position(|a| &a.name == name) else {
            if path.len() == 1 {
                let known: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
                cx.error(
                    "E_AGENT_FALLBACK",
                    at.key("fallback"),
                    format!(
                        "agent `{}` falls back to `{name}`, which is not an agent",
                        path[0]
                    ),
                    format!("name one of: {}", known.join(", ")),
                );
            }
            return;
        };
        path.push(&agents[j].name);
        if j == i {
            cx.error(
                "E_AGENT_FALLBACK_CYCLE",
                at.key("fallback"),
                format!(
                    "agent `{}`'s fallbacks lead back to it ({})",
                    agents[i].name,
                    path.join(" -> ")
                ),
                "end the chain at an agent without fallback",
            );
            return;
        }
        if path[..path.len() - 1].contains(&agents[j].name.as_str()) {
            return;
        }
        next = agents[j].fallback.as_ref();
    }
}
