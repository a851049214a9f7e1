//! Tests of building the registry from validated configuration.

use std::time::Duration;

use super::*;
use crate::agent::testkit::fixed_clock;
use crate::config::ProviderConfig;

fn config(name: &str, provider: ProviderConfig, tools: &[&str], default: bool) -> AgentConfig {
    AgentConfig {
        name: name.into(),
        provider,
        tools: tools.iter().map(ToString::to_string).collect(),
        default,
        max_steps: 4,
        run_timeout: Duration::from_secs(30),
        tool_timeout: Duration::from_secs(2),
        ..AgentConfig::default()
    }
}

#[test]
fn builds_agents_and_resolves_the_default() {
    let registry = Registry::with_clock(
        &[
            config(
                "helper",
                ProviderConfig::Scripted,
                &["calculator", "clock"],
                false,
            ),
            config("plain", ProviderConfig::Scripted, &[], true),
        ],
        fixed_clock(),
    )
    .unwrap();
    assert_eq!(registry.default().name(), "plain");
    assert_eq!(
        registry.get("helper").unwrap().tool_names(),
        ["calculator", "clock"]
    );
    assert!(registry.get("nobody").is_none());
    assert_eq!(registry.resolve(None).unwrap().name(), "plain");
    assert_eq!(registry.resolve(Some("helper")).unwrap().name(), "helper");
    assert!(registry.resolve(Some("nobody")).is_none());
    // Hidden test hooks are callable but not described to the provider.
    let helper = registry.get("helper").unwrap();
    assert!(helper.tool(tools::FAIL_TOOL).is_some());
    assert!(helper.tool("thread_history").is_none());
}

#[test]
fn reports_every_problem_at_once() {
    let openai = ProviderConfig::OpenAi {
        service: "llm".into(),
        model: "gpt".into(),
        max_output_tokens: None,
        temperature: None,
    };
    let err = Registry::from_config(&[
        config(
            "a",
            ProviderConfig::Scripted,
            &["calculator", "shell"],
            true,
        ),
        config("a", ProviderConfig::Scripted, &[], true),
        config("b", openai, &[], false),
    ])
    .unwrap_err();
    assert_eq!(
        err.0,
        [
            AgentConfigError::Service {
                agent: "b".into(),
                service: "llm".into(),
                reason: "no service of kind openai by that name".into(),
            },
            AgentConfigError::UnknownTool {
                agent: "a".into(),
                tool: "shell".into()
            },
            AgentConfigError::Duplicate("a".into()),
            AgentConfigError::Default(2),
        ]
    );
    assert!(err.to_string().contains("agent `b`: service `llm`"));
    assert_eq!(
        Registry::from_config(&[]).unwrap_err().0,
        [AgentConfigError::Default(0)]
    );
}
