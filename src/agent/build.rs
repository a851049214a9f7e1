//! Each agent's provider, as the registry builds it: the scripted one, or an `openai`
//! one over its service's client (one client per service, process scope), wrapped in its
//! `fallback` chain. Nothing here touches the network.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::AgentConfigError;
use super::fallback::Fallback;
use super::openai::{Endpoint, OpenAiProvider, Params};
use super::provider::Provider;
use super::scripted::ScriptedProvider;
use crate::config::{AgentConfig, ProviderConfig, ServiceConfig, ServiceKind};

/// The configuration's services by name.
pub type Services = BTreeMap<String, ServiceConfig>;

/// One provider per agent (in order), `None` where it could not be built (the error is
/// in `errors`).
pub fn providers(
    configs: &[AgentConfig],
    services: &Services,
    errors: &mut Vec<AgentConfigError>,
) -> Vec<Option<Arc<dyn Provider>>> {
    let mut endpoints: BTreeMap<&str, Arc<Endpoint>> = BTreeMap::new();
    let own: Vec<Option<Arc<dyn Provider>>> = configs
        .iter()
        .map(|config| match &config.provider {
            ProviderConfig::Scripted => {
                Some(Arc::new(ScriptedProvider::default()) as Arc<dyn Provider>)
            }
            ProviderConfig::OpenAi {
                service,
                model,
                max_output_tokens,
                temperature,
            } => {
                let endpoint = match endpoints.get(service.as_str()) {
                    Some(endpoint) => Arc::clone(endpoint),
                    None => match endpoint(service, services) {
                        Ok(endpoint) => {
                            let endpoint = Arc::new(endpoint);
                            endpoints.insert(service, Arc::clone(&endpoint));
                            endpoint
                        }
                        Err(reason) => {
                            errors.push(AgentConfigError::Service {
                                agent: config.name.clone(),
                                service: service.clone(),
                                reason,
                            });
                            return None;
                        }
                    },
                };
                let params = Params {
                    model: model.clone(),
                    max_output_tokens: *max_output_tokens,
                    temperature: *temperature,
                };
                Some(Arc::new(OpenAiProvider::new(endpoint, params)) as Arc<dyn Provider>)
            }
        })
        .collect();
    (0..configs.len())
        .map(|i| with_fallbacks(i, configs, &own, errors))
        .collect()
}

fn endpoint(name: &str, services: &Services) -> Result<Endpoint, String> {
    let svc = services
        .get(name)
        .filter(|s| s.kind == ServiceKind::Openai)
        .ok_or_else(|| "no service of kind openai by that name".to_string())?;
    if svc.url.is_none() {
        return Err("the service has no url or url_env, so it could not be called".into());
    }
    let client = Endpoint::client(svc)?;
    Ok(Endpoint::new(name, svc, client))
}

/// Agent `i`'s provider wrapped in its fallback chain; a chain that names an unknown
/// agent or loops is an error (reported for the agent that starts it).
fn with_fallbacks(
    i: usize,
    configs: &[AgentConfig],
    own: &[Option<Arc<dyn Provider>>],
    errors: &mut Vec<AgentConfigError>,
) -> Option<Arc<dyn Provider>> {
    let mut chain = vec![i];
    while let Some(next) = &configs[*chain.last()?].fallback {
        let Some(j) = configs.iter().position(|c| &c.name == next) else {
            if chain.len() == 1 {
                errors.push(AgentConfigError::UnknownFallback {
                    agent: configs[i].name.clone(),
                    fallback: next.clone(),
                });
            }
            return None;
        };
        if chain.contains(&j) {
            if j == i {
                let mut path: Vec<&str> = chain.iter().map(|&k| configs[k].name.as_str()).collect();
                path.push(&configs[i].name);
                errors.push(AgentConfigError::FallbackCycle {
                    agent: configs[i].name.clone(),
                    path: path.join(" -> "),
                });
            }
            return None;
        }
        chain.push(j);
    }
    // Built from the end of the chain back to its start.
    let mut provider = own[*chain.last()?].clone()?;
    for pair in chain.windows(2).rev() {
        let primary = own[pair[0]].clone()?;
        provider = Arc::new(Fallback::new(primary, provider, &configs[pair[1]].name));
    }
    Some(provider)
}
