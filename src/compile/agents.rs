//! Building the agent registry (`components.agent_registry`): every agent's provider and
//! tools, as `serve` runs them (`openai` clients are built, no request is made). Whatever
//! the registry refuses is a finding here with its own code, so `check` and `serve` agree.

use crate::agent::{AgentConfigError, Registry};
use crate::config::Config;
use crate::diagnostic::Finding;
use crate::keypath::kp;

/// The registry; an empty one (with findings) when an agent cannot be built.
pub fn build(config: &Config, findings: &mut Vec<Finding>) -> Registry {
    let relaxed = config.kind.is_relaxed();
    // Only what some agent lists is built: an unused MCP declaration (W_TOOL_UNUSED)
    // would otherwise hold a session nothing calls.
    let used: std::collections::BTreeMap<String, crate::config::ToolConfig> = config
        .tools
        .iter()
        .filter(|(name, _)| config.agents.iter().any(|a| a.tools.contains(name)))
        .map(|(name, tool)| (name.clone(), tool.clone()))
        .collect();
    let declared = match crate::agent::tools_from_config(&used, relaxed) {
        Ok(declared) => declared,
        Err(e) => {
            findings.push(Finding::error(
                "E_TOOL_SETUP",
                kp("tools"),
                e,
                "fix the [tools] declarations (the system CA store must be readable)",
            ));
            // Without the declared tools every agent naming one would read as an unknown
            // tool: the one finding above is the cause.
            return Registry::empty();
        }
    };
    match Registry::with_declared(&config.agents, &config.services, relaxed, declared) {
        Ok(r) => r,
        Err(e) => {
            findings.extend(e.0.iter().map(|e| finding(config, e)));
            Registry::empty()
        }
    }
}

fn finding(config: &Config, e: &AgentConfigError) -> Finding {
    let index = |name: &str| {
        config
            .agents
            .iter()
            .position(|a| a.name == name)
            .unwrap_or(0)
    };
    let (code, at, hint) = match e {
        AgentConfigError::UnknownTool { agent, tool } => {
            let i = index(agent);
            let j = config.agents[i]
                .tools
                .iter()
                .position(|t| t == tool)
                .unwrap_or(0);
            (
                "E_UNKNOWN_TOOL",
                kp(&format!("agents[{i}].tools[{j}]")),
                "use a built-in tool (calculator, clock, thread_history) or declare it under [tools.NAME]"
                    .to_string(),
            )
        }
        AgentConfigError::Service { agent, .. } => (
            "E_AGENT_SERVICE",
            kp(&format!("agents[{}].service", index(agent))),
            "point service at a [services] entry with kind = \"openai\" and a usable url"
                .to_string(),
        ),
        AgentConfigError::UnknownFallback { agent, .. } => (
            "E_AGENT_FALLBACK",
            kp(&format!("agents[{}].fallback", index(agent))),
            "name another declared agent".to_string(),
        ),
        AgentConfigError::FallbackCycle { agent, .. } => (
            "E_AGENT_FALLBACK_CYCLE",
            kp(&format!("agents[{}].fallback", index(agent))),
            "end the chain at an agent without fallback".to_string(),
        ),
        AgentConfigError::Duplicate(agent) => (
            "E_AGENT_DUPLICATE",
            // The later declaration is the duplicate, as the validator says.
            kp(&format!(
                "agents[{}].name",
                config
                    .agents
                    .iter()
                    .rposition(|a| &a.name == agent)
                    .unwrap_or(0)
            )),
            "give each agent its own name".to_string(),
        ),
        AgentConfigError::Default(n) => (
            "E_AGENT_DEFAULT",
            match config
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| a.default)
                .nth(1)
            {
                Some((i, _)) if *n > 1 => kp(&format!("agents[{i}].default")),
                _ => kp("agents"),
            },
            "mark exactly one agent default = true".to_string(),
        ),
    };
    Finding::error(code, at, e.to_string(), hint)
}
