//! Building the validated [`Config`] from a raw configuration that passed every rule.
//! Secrets are read from their variables here; nothing can fail that the rules did not
//! already check, so unexpected gaps are reported as `E_INTERNAL` rather than panics.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::config::raw::{AuthMode, EnvironmentKind, LogFormat, RawConfig};
use crate::config::validated::*;

/// Builds the validated configuration.
pub fn build(
    raw: &RawConfig,
    env: &BTreeMap<String, String>,
    config_dir: &std::path::Path,
) -> Result<Config, String> {
    let var = |name: &str| {
        env.get(name)
            .cloned()
            .ok_or_else(|| format!("variable {name} vanished"))
    };
    let ms = Duration::from_millis;
    let jwt = match (&raw.auth.jwt, raw.auth.mode) {
        (Some(j), AuthMode::Jwt) => {
            let algorithms = j
                .algorithms
                .iter()
                .map(|a| {
                    jsonwebtoken::Algorithm::from_str(a).map_err(|e| format!("algorithm {a}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let key = if let Some(s) = &j.secret {
                KeySource::Secret(Secret::new(s.clone()))
            } else if let Some(v) = &j.secret_env {
                KeySource::Secret(Secret::new(var(v)?))
            } else if let Some(f) = &j.public_key_file {
                KeySource::PublicKeyFile(config_dir.join(f))
            } else if let Some(u) = &j.jwks_url {
                match u.strip_prefix("file:") {
                    Some(f) => KeySource::JwksFile(config_dir.join(f)),
                    None => KeySource::JwksUrl(u.clone()),
                }
            } else {
                return Err("no JWT key source".into());
            };
            Some(JwtConfig {
                algorithms,
                key,
                issuer: j.issuer.clone(),
                audience: j.audience.clone(),
                leeway_s: j.leeway_s,
                max_token_bytes: j.max_token_bytes as usize,
            })
        }
        _ => None,
    };
    let mut bypass = Vec::new();
    for b in &raw.auth.bypass {
        let secret = match (&b.secret, &b.secret_env) {
            (Some(s), _) => s.clone(),
            (None, Some(v)) => var(v)?,
            _ => return Err(format!("bypass {} has no secret", b.name)),
        };
        let from = b
            .from
            .iter()
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        bypass.push(BypassRule {
            name: b.name.clone(),
            header: b.header.to_ascii_lowercase(),
            secret: Secret::new(secret),
            user_id: b.user_id.clone(),
            from,
        });
    }
    let mut services = BTreeMap::new();
    for (n, s) in &raw.services {
        let url = match (&s.url, &s.url_env) {
            (Some(u), _) => Some(Secret::new(u.clone())),
            (None, Some(v)) => Some(Secret::new(var(v)?)),
            _ => None,
        };
        services.insert(
            n.clone(),
            ServiceConfig {
                kind: s.kind,
                url,
                required: s.required,
                connect_timeout: ms(s.connect_timeout_ms),
                pool_size: s.pool_size,
                needs: s.needs.clone(),
            },
        );
    }
    let routes = raw
        .routes
        .iter()
        .map(|r| {
            Handler::from_name(&r.handler)
                .map(|handler| Route {
                    method: r.method,
                    path: r.path.clone(),
                    handler,
                })
                .ok_or_else(|| format!("handler {}", r.handler))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let components = raw
        .components
        .iter()
        .map(|(n, c)| {
            (
                n.clone(),
                ComponentConfig {
                    kind: c.kind.clone(),
                    scope: c.scope,
                    needs: c.needs.clone(),
                },
            )
        })
        .collect();
    let single = raw.agents.len() == 1;
    let agents = raw
        .agents
        .iter()
        .map(|a| AgentConfig {
            name: a.name.clone(),
            provider: match a.provider.as_str() {
                "openai" => ProviderConfig::OpenAi {
                    service: a.service.clone().unwrap_or_default(),
                    model: a.model.clone().unwrap_or_default(),
                },
                _ => ProviderConfig::Scripted,
            },
            tools: a.tools.clone(),
            default: a.default || single,
            max_steps: a.max_steps,
            run_timeout: ms(a.run_timeout_ms),
            tool_timeout: ms(a.tool_timeout_ms),
        })
        .collect();
    let kind = raw.environment.kind;
    let strict = matches!(kind, EnvironmentKind::Staging | EnvironmentKind::Production);
    Ok(Config {
        name: raw.environment.name.clone(),
        kind,
        config_dir: config_dir.to_path_buf(),
        server: ServerConfig {
            listen: raw
                .server
                .listen
                .parse()
                .map_err(|_| "listen address".to_string())?,
            public_url: raw.server.public_url.trim_end_matches('/').to_string(),
            proxy_idle_timeout: ms(raw.server.proxy_idle_timeout_ms),
            shutdown_grace: ms(raw.server.shutdown_grace_ms),
            max_connections: raw.server.max_connections,
        },
        websocket: WebSocketConfig {
            path: raw.websocket.path.clone(),
            aliases: raw.websocket.aliases.clone(),
            allowed_origins: raw.websocket.allowed_origins.clone(),
            max_message_bytes: raw.websocket.max_message_bytes as usize,
            heartbeat: ms(raw.websocket.heartbeat_ms),
            pong_timeout: ms(raw.websocket.pong_timeout_ms),
            send_queue: raw.websocket.send_queue as usize,
            messages_per_minute: raw.websocket.messages_per_minute,
        },
        auth: AuthConfig {
            mode: raw.auth.mode,
            token_sources: raw.auth.token_sources.clone(),
            reject_at: raw.auth.reject_at,
            first_message_timeout: ms(raw.auth.first_message_timeout_ms),
            jwt,
            bypass,
        },
        services,
        routes,
        components,
        agents,
        client_websocket_url: raw.client.websocket_url.clone(),
        log_format: raw.logging.format.unwrap_or(if strict {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        }),
        log_level: raw.logging.level.clone().unwrap_or_else(|| "info".into()),
    })
}
