//! Building the validated [`Config`] from a raw configuration that passed every rule.
//! Secrets are read from their variables here; nothing can fail that the rules did not
//! already check, so unexpected gaps are reported as `E_INTERNAL` rather than panics.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::config::raw::defaults as d;
use crate::config::raw::{AuthMode, EnvironmentKind, JwtSection, LogFormat, RawConfig};
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
    let secs = Duration::from_secs;
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
            } else if let Some(f) = j.jwks_url.as_ref().and_then(|u| u.strip_prefix("file:")) {
                KeySource::JwksFile(config_dir.join(f))
            } else if let Some(location) = remote_location(j) {
                KeySource::Remote(RemoteKeySource {
                    location,
                    ca_file: j.ca_file.as_ref().map(|f| config_dir.join(f)),
                    min_refresh: secs(j.jwks_min_refresh_s.unwrap_or(d::jwks_min_refresh_s())),
                    max_refresh: secs(j.jwks_max_refresh_s.unwrap_or(d::jwks_max_refresh_s())),
                    timeout: ms(j.jwks_timeout_ms.unwrap_or(d::jwks_timeout_ms())),
                    allow_http: raw.environment.kind.is_relaxed(),
                })
            } else {
                return Err("no JWT key source".into());
            };
            Some(JwtConfig {
                algorithms,
                key,
                // Discovery pins the issuer; the validator refuses a different `issuer`.
                issuer: j.issuer.clone().or_else(|| j.oidc_issuer.clone()),
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
            .map(|n| parse_net(n).ok_or_else(|| format!("bypass network {n}")))
            .collect::<Result<Vec<_>, _>>()?;
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
            tls: raw.server.tls.as_ref().map(|t| TlsConfig {
                cert_file: config_dir.join(&t.cert_file),
                key_file: config_dir.join(&t.key_file),
            }),
            trusted_proxies: raw
                .server
                .trusted_proxies
                .iter()
                .map(|n| parse_net(n).ok_or_else(|| format!("trusted proxy {n}")))
                .collect::<Result<_, _>>()?,
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

/// A network in CIDR form, or a single address as its /32 (/128).
pub fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .ok()
}

/// The remote key location: an `http(s)://` JWKS URL or an OIDC issuer.
fn remote_location(j: &JwtSection) -> Option<RemoteLocation> {
    match (&j.jwks_url, &j.oidc_issuer) {
        (Some(url), _) => Some(RemoteLocation::JwksUrl(url.clone())),
        (None, Some(issuer)) => Some(RemoteLocation::OidcIssuer(issuer.clone())),
        (None, None) => None,
    }
}
