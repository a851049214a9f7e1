//! Agent runtime: the process-scope [`Registry`] of configured agents and the per-message
//! [`run`] that drives one of them and reports [`AgentEvent`]s through an [`EventSink`].
//!
//! Architecture invariant: this module never touches storage or sockets. What it needs
//! from outside (storing and delivering events, reading the user's thread, the clock) is a
//! trait defined here ([`EventSink`], [`ThreadHistory`], [`Clock`]) and implemented by the
//! caller.
//!
//! How a WebSocket session uses it, per user message:
//! 1. `let agent = registry.get(name)` (or `registry.default()`); unknown → `error` reply.
//! 2. Build a [`RunContext`] for this user, thread and message (with a child of the
//!    session's cancellation token, and a [`ThreadHistory`] over this thread only).
//! 3. `let outcome = run(&agent, &ctx, &sink).await` inside a spawned task, where `sink`
//!    stores each event, assigns `seq`, adds `run_id`/`thread_id` to
//!    [`AgentEvent::to_body`] and fans it out.
//! 4. If `outcome.completion_stored` is false, still send `outcome.completed_event()` to
//!    the user's sockets so the run visibly ends.

mod build;
mod context;
mod event;
mod fallback;
mod openai;
mod provider;
mod runner;
mod scripted;
mod tools;

#[cfg(test)]
pub(crate) mod testkit;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::config::{AgentConfig, RunBounds};

pub use build::Services;
pub use context::{Clock, EmptyHistory, RunContext, ThreadHistory};
pub use event::{AgentEvent, ErrorInfo, EventSink, SinkError, ToolErrorInfo, codes};
pub use provider::{
    ChatMessage, Chunk, Provider, ProviderError, ProviderRequest, ToolCall, ToolSpec, Usage,
};
pub use runner::{RunOutcome, run};
pub use scripted::ScriptedProvider;
pub use tools::{
    BUILTIN_TOOLS, CalcError, Declared, McpStatus, Tool, USER_HEADER, evaluate,
    from_config as tools_from_config, offered_tools, tool_codes,
};

/// Step and time limits of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most provider steps in one run.
    pub max_steps: u32,
    /// Whole-run timeout; the run ends `timeout`.
    pub run_timeout: Duration,
    /// Per-tool-call timeout; the call fails with `TOOL_TIMEOUT`.
    pub tool_timeout: Duration,
}

/// One configured agent: a provider, its tools and its limits. Process scope: it holds
/// nothing about any user.
pub struct Agent {
    name: String,
    provider: Arc<dyn Provider>,
    /// Tools enabled in configuration; only these are described to the provider.
    tools: Vec<Arc<dyn Tool>>,
    /// Callable but never described to the provider (the scripted test hooks).
    hidden: Vec<Arc<dyn Tool>>,
    specs: Vec<ToolSpec>,
    /// Some tool's spec can change after boot (MCP): specs are asked per step.
    dynamic: bool,
    max_steps: u32,
    run_timeout: Duration,
    tool_timeout: Duration,
    bounds: RunBounds,
    system_prompt: Option<String>,
    history_messages: u32,
    history_max_bytes: usize,
}

impl Agent {
    /// An agent over any provider and tool set; [`Registry::from_config`] is the usual
    /// way to get one, this is for embedding other providers (and for tests).
    pub fn new(
        name: impl Into<String>,
        provider: Arc<dyn Provider>,
        tools: Vec<Arc<dyn Tool>>,
        limits: Limits,
    ) -> Self {
        let specs = tools.iter().map(|tool| tool.spec()).collect();
        let dynamic = tools.iter().any(|tool| tool.dynamic());
        Self {
            name: name.into(),
            provider,
            tools,
            hidden: Vec::new(),
            specs,
            dynamic,
            max_steps: limits.max_steps,
            run_timeout: limits.run_timeout,
            tool_timeout: limits.tool_timeout,
            bounds: RunBounds::default(),
            system_prompt: None,
            history_messages: 0,
            history_max_bytes: 0,
        }
    }

    /// Bounds the run's answer, events and tool results.
    pub fn with_bounds(mut self, bounds: RunBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// The configured system prompt and thread context of `config`.
    fn with_context(mut self, config: &AgentConfig) -> Self {
        self.system_prompt.clone_from(&config.system_prompt);
        self.history_messages = config.history_messages;
        self.history_max_bytes = config.history_max_bytes;
        self
    }

    /// The model behind the agent (`""` for the scripted provider), a metrics label.
    pub fn model(&self) -> &str {
        self.provider.model()
    }

    /// Makes the scripted provider's test-hook tools callable.
    fn with_test_hooks(mut self) -> Self {
        self.hidden = tools::test_hooks();
        self
    }

    /// The agent's name (`agent_started.agent`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Names of the enabled tools, in configuration order.
    pub fn tool_names(&self) -> Vec<&'static str> {
        self.specs.iter().map(|spec| spec.name).collect()
    }

    /// The tools the provider is told about for this step: those built at boot, or, when
    /// some are MCP tools, the ones available now with their listed specs.
    pub fn specs(&self) -> Cow<'_, [ToolSpec]> {
        match self.dynamic {
            false => Cow::Borrowed(&self.specs),
            true => Cow::Owned(
                self.tools
                    .iter()
                    .filter(|tool| tool.available())
                    .map(|tool| tool.spec())
                    .collect(),
            ),
        }
    }

    fn tool(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools
            .iter()
            .chain(&self.hidden)
            .find(|tool| tool.spec().name == name)
    }
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("provider", &self.provider.kind())
            .field("tools", &self.tool_names())
            .field("max_steps", &self.max_steps)
            .field("run_timeout", &self.run_timeout)
            .field("tool_timeout", &self.tool_timeout)
            .finish()
    }
}

/// One reason the agent configuration cannot be turned into a registry.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AgentConfigError {
    /// A tool name that is not built in.
    #[error(
        "agent `{agent}`: unknown tool `{tool}` (built-in tools: calculator, clock, thread_history)"
    )]
    UnknownTool {
        /// Agent.
        agent: String,
        /// Tool.
        tool: String,
    },
    /// The model service of an `openai` agent is missing or its client cannot be built.
    #[error("agent `{agent}`: service `{service}`: {reason}")]
    Service {
        /// Agent.
        agent: String,
        /// Service.
        service: String,
        /// What is wrong.
        reason: String,
    },
    /// A `fallback` that names no agent.
    #[error("agent `{agent}`: fallback `{fallback}` is not an agent")]
    UnknownFallback {
        /// Agent.
        agent: String,
        /// The name it gave.
        fallback: String,
    },
    /// Fallbacks that lead back to the agent.
    #[error("agent `{agent}`: its fallbacks lead back to it ({path})")]
    FallbackCycle {
        /// Agent.
        agent: String,
        /// The chain, `a -> b -> a`.
        path: String,
    },
    /// Two agents with one name.
    #[error("agent `{0}` is declared more than once")]
    Duplicate(String),
    /// Not exactly one default agent.
    #[error("exactly one agent must have `default = true`, found {0}")]
    Default(usize),
}

/// Every problem found in the agent configuration, not just the first.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid agent configuration: {}", list(.0))]
pub struct RegistryError(pub Vec<AgentConfigError>);

fn list(errors: &[AgentConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The configured agents, built once at boot.
#[derive(Debug)]
pub struct Registry {
    agents: Vec<Arc<Agent>>,
    default: usize,
    /// The `[tools.NAME]` declarations the agents' tools come from.
    declared: Declared,
}

impl Registry {
    /// Builds every agent with the real UTC clock.
    pub fn from_config(configs: &[AgentConfig]) -> Result<Self, RegistryError> {
        Self::with_clock(configs, Arc::new(chrono::Utc::now))
    }

    /// Builds every agent for an environment, `openai` agents over their `services`
    /// (one HTTP client per service; no request is made): the scripted provider's test
    /// hooks (`[[fail_tool]]`, `[[slow_tool]]`) exist only where `test_hooks` is true,
    /// i.e. in development and test, so nobody can trigger them against staging or
    /// production.
    pub fn for_environment(
        configs: &[AgentConfig],
        services: &Services,
        test_hooks: bool,
    ) -> Result<Self, RegistryError> {
        Self::build(configs, services, Arc::new(chrono::Utc::now), test_hooks)
    }

    /// Like [`Registry::for_environment`], with the `[tools.NAME]` declarations agents may
    /// list beside the built-in tools (see [`tools::from_config`]).
    pub fn with_declared(
        configs: &[AgentConfig],
        services: &Services,
        test_hooks: bool,
        declared: Declared,
    ) -> Result<Self, RegistryError> {
        Self::build_with(
            configs,
            services,
            Arc::new(chrono::Utc::now),
            test_hooks,
            declared,
        )
    }

    /// Starts what connects in the background until `shutdown` (MCP servers).
    pub fn start(&self, shutdown: &tokio_util::sync::CancellationToken) {
        self.declared.start(shutdown);
    }

    /// Each MCP server's state, for `/ready`.
    pub fn mcp_status(&self) -> Vec<McpStatus> {
        self.declared.mcp_status()
    }

    /// Builds every agent; the `clock` tool reads `clock` (no model services).
    pub fn with_clock(
        configs: &[AgentConfig],
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RegistryError> {
        Self::build(configs, &Services::new(), clock, true)
    }

    fn build(
        configs: &[AgentConfig],
        services: &Services,
        clock: Arc<dyn Clock>,
        test_hooks: bool,
    ) -> Result<Self, RegistryError> {
        Self::build_with(configs, services, clock, test_hooks, Declared::default())
    }

    fn build_with(
        configs: &[AgentConfig],
        services: &Services,
        clock: Arc<dyn Clock>,
        test_hooks: bool,
        declared: Declared,
    ) -> Result<Self, RegistryError> {
        let mut errors = Vec::new();
        let mut agents = Vec::new();
        let providers = build::providers(configs, services, &mut errors);
        for (i, (config, provider)) in configs.iter().zip(providers).enumerate() {
            if configs[..i].iter().any(|other| other.name == config.name) {
                errors.push(AgentConfigError::Duplicate(config.name.clone()));
            }
            let mut tools = Vec::new();
            for name in &config.tools {
                match tools::builtin(name, &clock) {
                    Some(tool) => tools.push(tool),
                    None if declared.get(name).is_some() => {
                        tools.extend(declared.get(name).into_iter().flatten().cloned())
                    }
                    None => errors.push(AgentConfigError::UnknownTool {
                        agent: config.name.clone(),
                        tool: name.clone(),
                    }),
                }
            }
            let limits = Limits {
                max_steps: config.max_steps,
                run_timeout: config.run_timeout,
                tool_timeout: config.tool_timeout,
            };
            let Some(provider) = provider else { continue };
            let scripted = provider.kind() == "scripted";
            let agent = Agent::new(config.name.clone(), provider, tools, limits)
                .with_bounds(config.bounds)
                .with_context(config);
            let agent = if test_hooks && scripted {
                agent.with_test_hooks()
            } else {
                agent
            };
            agents.push(Arc::new(agent));
        }
        let defaults: Vec<usize> = configs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.default)
            .map(|(i, _)| i)
            .collect();
        if defaults.len() != 1 {
            errors.push(AgentConfigError::Default(defaults.len()));
        }
        if !errors.is_empty() {
            return Err(RegistryError(errors));
        }
        // No errors means every config became an agent, so indices line up.
        Ok(Self {
            agents,
            default: defaults[0],
            declared,
        })
    }

    /// A registry with no agents, standing in for one that could not be built while the
    /// compile step collects the rest of a configuration's failures (never served).
    pub fn empty() -> Self {
        Self {
            agents: Vec::new(),
            default: 0,
            declared: Declared::default(),
        }
    }

    /// The agent called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Agent>> {
        self.agents.iter().find(|agent| agent.name == name).cloned()
    }

    /// The default agent.
    pub fn default(&self) -> Arc<Agent> {
        Arc::clone(&self.agents[self.default])
    }

    /// The agent a `user_message` asks for: its `agent` field, or the default when absent.
    pub fn resolve(&self, name: Option<&str>) -> Option<Arc<Agent>> {
        name.map_or_else(|| Some(self.default()), |name| self.get(name))
    }
}

#[cfg(test)]
mod tests;
