//! Building the validated [`Config`] from a raw configuration.
//!
//! It never fails: a value the rules refused is replaced by a neutral placeholder, so the
//! compile step can still build (and report on) every other component of a configuration
//! with errors, as vector's compiler collects late failures too. Only a configuration
//! without errors is ever served. Secrets are read from their variables here; a variable
//! that is not set gives [`Secret::unset`] (reported by the rules, or allowed by
//! `check --no-env`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::config::load::Loaded;
use crate::config::raw::defaults as d;
use crate::config::raw::{self, AuthMode, EnvironmentKind, JwtSection, LogFormat, RawConfig};
use crate::config::validated::*;

/// Reads the variables `*_env` keys name.
struct Vars<'a>(&'a BTreeMap<String, String>);

impl Vars<'_> {
    fn secret(&self, name: &str) -> Secret {
        match self.0.get(name).filter(|v| !v.is_empty()) {
            Some(v) => Secret::new(v.clone()),
            None => Secret::unset(),
        }
    }
}

/// Builds the validated configuration (see the module header for what "validated" means
/// while errors remain).
pub fn build(raw: &RawConfig, loaded: &Loaded) -> Config {
    let vars = Vars(&loaded.env);
    let ms = Duration::from_millis;
    let kind = raw.environment.kind;
    let strict = matches!(kind, EnvironmentKind::Staging | EnvironmentKind::Production);
    let server = server(&raw.server, &loaded.config_dir);
    let mut websocket = websocket(&raw.websocket);
    if kind == EnvironmentKind::Development {
        allow_own_origins(&mut websocket.allowed_origins, &server);
    }
    Config {
        name: raw.environment.name.clone(),
        kind,
        config_dir: loaded.config_dir.clone(),
        data_dir: loaded.data_dir.clone(),
        no_env: loaded.no_env,
        server,
        websocket,
        auth: AuthConfig {
            mode: raw.auth.mode,
            token_sources: raw.auth.token_sources.clone(),
            reject_at: raw.auth.reject_at,
            first_message_timeout: ms(raw.auth.first_message_timeout_ms),
            jwt: jwt(raw, &vars, &loaded.config_dir),
            bypass: raw.auth.bypass.iter().map(|b| bypass(b, &vars)).collect(),
        },
        services: raw
            .services
            .iter()
            .map(|(n, s)| {
                let svc = service(s, &vars, &loaded.data_dir);
                let ca_file = s.ca_file.as_ref().map(|f| loaded.config_dir.join(f));
                (n.clone(), ServiceConfig { ca_file, ..svc })
            })
            .collect(),
        routes: raw
            .routes
            .iter()
            .filter_map(|r| {
                Some(Route {
                    method: r.method,
                    path: r.path.clone(),
                    handler: Handler::from_name(&r.handler)?,
                })
            })
            .collect(),
        components: components(&raw.components),
        agents: agents(&raw.agents),
        tools: crate::config::tools(&raw.tools),
        client_websocket_url: raw.client.websocket_url.clone(),
        log_format: raw.logging.format.unwrap_or(if strict {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        }),
        log_level: raw.logging.level.clone().unwrap_or_else(|| "info".into()),
    }
}

fn server(s: &raw::ServerSection, config_dir: &Path) -> ServerConfig {
    let ms = Duration::from_millis;
    ServerConfig {
        listen: s
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
        public_url: s.public_url.trim_end_matches('/').to_string(),
        proxy_idle_timeout: ms(s.proxy_idle_timeout_ms),
        shutdown_grace: ms(s.shutdown_grace_ms),
        max_connections: s.max_connections,
        run_lease: ms(s.run_lease_ms),
        tls: s.tls.as_ref().map(|t| TlsConfig {
            cert_file: config_dir.join(&t.cert_file),
            key_file: config_dir.join(&t.key_file),
        }),
        // Entries that are not networks are refused by E_TRUSTED_PROXY_CIDR.
        trusted_proxies: s
            .trusted_proxies
            .iter()
            .filter_map(|n| parse_net(n))
            .collect(),
        nodes: s.nodes,
    }
}

fn websocket(w: &raw::WebSocketSection) -> WebSocketConfig {
    let ms = Duration::from_millis;
    WebSocketConfig {
        path: w.path.clone(),
        aliases: w.aliases.clone(),
        allowed_origins: w.allowed_origins.clone(),
        max_message_bytes: w.max_message_bytes as usize,
        heartbeat: ms(w.heartbeat_ms),
        pong_timeout: ms(w.pong_timeout_ms),
        send_queue_bytes: w.send_queue_bytes as usize,
        send_timeout: ms(w.send_timeout_ms),
        messages_per_minute: w.messages_per_minute,
        max_connections_per_user: w.max_connections_per_user,
    }
}

/// In development the console is served from `server.public_url` (or the listen address,
/// when someone moved the port and not the URL): those origins are always allowed, so
/// moving the port does not break the console with a silent 403. An empty list already
/// allows every origin and stays empty.
fn allow_own_origins(origins: &mut Vec<String>, server: &ServerConfig) {
    if origins.is_empty() {
        return;
    }
    let mut own = vec![server.public_url.clone()];
    let port = server.listen.port();
    if server.listen.ip().is_loopback() && port != 0 {
        own.push(format!("http://localhost:{port}"));
        own.push(format!("http://127.0.0.1:{port}"));
    }
    for origin in own {
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
}

fn jwt(raw: &RawConfig, vars: &Vars, config_dir: &Path) -> Option<JwtConfig> {
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    let (Some(j), AuthMode::Jwt) = (&raw.auth.jwt, raw.auth.mode) else {
        return None;
    };
    let algorithms = j
        .algorithms
        .iter()
        .filter_map(|a| jsonwebtoken::Algorithm::from_str(a).ok())
        .collect();
    let key = if let Some(s) = &j.secret {
        KeySource::Secret(Secret::new(s.clone()))
    } else if let Some(v) = &j.secret_env {
        KeySource::Secret(vars.secret(v))
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
        // Refused by E_JWT_KEY_MISSING.
        KeySource::Secret(Secret::unset())
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

fn bypass(b: &raw::BypassSection, vars: &Vars) -> BypassRule {
    let secret = match (&b.secret, &b.secret_env) {
        (Some(s), _) => Secret::new(s.clone()),
        (None, Some(v)) => vars.secret(v),
        // Refused by E_BYPASS_NO_SECRET.
        _ => Secret::unset(),
    };
    let from = b.from.iter().filter_map(|n| parse_net(n)).collect();
    BypassRule {
        name: b.name.clone(),
        header: b.header.to_ascii_lowercase(),
        secret,
        user_id: b.user_id.clone(),
        from,
    }
}

fn service(s: &raw::ServiceSection, vars: &Vars, data_dir: &Path) -> ServiceConfig {
    let url = match (&s.url, &s.url_env) {
        (Some(u), _) => Some(Secret::new(u.clone())),
        (None, Some(v)) => Some(vars.secret(v)),
        _ => None,
    };
    let url = match (s.kind, url) {
        (ServiceKind::Sqlite, Some(u)) if u.is_set() => {
            Some(Secret::new(resolve_sqlite(u.expose(), data_dir)))
        }
        (_, url) => url,
    };
    ServiceConfig {
        kind: s.kind,
        url,
        required: s.required,
        connect_timeout: Duration::from_millis(s.connect_timeout_ms),
        pool_size: s.pool_size,
        needs: s.needs.clone(),
        api_key: match (&s.api_key, &s.api_key_env) {
            (Some(k), _) => Some(Secret::new(k.clone())),
            (None, Some(v)) => Some(vars.secret(v)),
            _ => None,
        },
        read_timeout: Duration::from_millis(s.read_timeout_ms.unwrap_or(d::read_timeout_ms())),
        max_retries: s.max_retries.unwrap_or(d::max_retries()),
        ca_file: None,
    }
}

/// `sqlite://relative/path.db` is relative to the data directory (`--data-dir`), so the
/// database lands in one documented place whatever the working directory; absolute paths
/// and query strings are kept.
pub fn resolve_sqlite(url: &str, data_dir: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return url.to_string();
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with('/') || path.starts_with(':') {
        return url.to_string();
    }
    let mut out = format!("sqlite://{}", data_dir.join(path).display());
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn components(c: &raw::ComponentsSection) -> Components {
    fn take<K: Copy>(c: &Option<raw::ComponentSection<K>>, kind: K, scope: Scope) -> Component<K> {
        match c {
            Some(c) => Component {
                kind: c.kind,
                scope: c.scope,
                needs: c.needs.clone(),
            },
            // Refused by E_COMPONENT_MISSING; the placeholder lets the rest be checked.
            None => Component {
                kind,
                scope,
                needs: Vec::new(),
            },
        }
    }
    Components {
        store: take(&c.store, StoreKind::Sql, Scope::Process),
        event_bus: take(&c.event_bus, EventBusKind::Local, Scope::Process),
        jwt_keys: c
            .jwt_keys
            .as_ref()
            .map(|_| take(&c.jwt_keys, JwtKeysKind::Jwt, Scope::Process)),
        agent_registry: take(&c.agent_registry, AgentRegistryKind::Agents, Scope::Process),
        metrics: take(&c.metrics, MetricsKind::Prometheus, Scope::Process),
        rate_limiter: take(&c.rate_limiter, RateLimiterKind::Local, Scope::Process),
        session: take(&c.session, SessionKind::Websocket, Scope::Connection),
        run_context: take(&c.run_context, RunContextKind::AgentRun, Scope::Run),
    }
}

fn agents(raw: &[raw::AgentSection]) -> Vec<AgentConfig> {
    let ms = Duration::from_millis;
    let single = raw.len() == 1;
    raw.iter()
        .map(|a| AgentConfig {
            name: a.name.clone(),
            provider: match a.provider.as_str() {
                "openai" => ProviderConfig::OpenAi {
                    service: a.service.clone().unwrap_or_default(),
                    model: a.model.clone().unwrap_or_default(),
                    max_output_tokens: a.max_output_tokens,
                    temperature: a.temperature,
                },
                _ => ProviderConfig::Scripted,
            },
            tools: a.tools.clone(),
            default: a.default || single,
            max_steps: a.max_steps,
            run_timeout: ms(a.run_timeout_ms),
            tool_timeout: ms(a.tool_timeout_ms),
            bounds: RunBounds {
                max_answer_bytes: a.max_answer_bytes as usize,
                max_run_events: a.max_run_events,
                max_tool_result_bytes: a.max_tool_result_bytes as usize,
            },
            system_prompt: a.system_prompt.clone(),
            // The scripted provider reads only the message it answers.
            history_messages: a.history_messages.unwrap_or(match a.provider.as_str() {
                "openai" => d::history_messages(),
                _ => 0,
            }),
            history_max_bytes: a.history_max_bytes as usize,
            fallback: a.fallback.clone(),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_sqlite_paths_land_in_the_data_dir() {
        let data = Path::new("/srv/portcullis/data");
        assert_eq!(
            resolve_sqlite("sqlite://dev.db", data),
            "sqlite:///srv/portcullis/data/dev.db"
        );
        assert_eq!(
            resolve_sqlite("sqlite://sub/dev.db?mode=rwc", data),
            "sqlite:///srv/portcullis/data/sub/dev.db?mode=rwc"
        );
        assert_eq!(
            resolve_sqlite("sqlite:///abs/x.db", data),
            "sqlite:///abs/x.db"
        );
        assert_eq!(resolve_sqlite("postgres://h/db", data), "postgres://h/db");
    }

    #[test]
    fn development_allows_its_own_origins_once() {
        let server = ServerConfig {
            listen: "127.0.0.1:9000".parse().unwrap(),
            public_url: "http://localhost:9000".into(),
            proxy_idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(1),
            max_connections: 1,
            run_lease: Duration::from_secs(15),
            tls: None,
            trusted_proxies: Vec::new(),
            nodes: 1,
        };
        let mut origins = vec!["http://localhost:8080".to_string()];
        allow_own_origins(&mut origins, &server);
        assert_eq!(
            origins,
            [
                "http://localhost:8080",
                "http://localhost:9000",
                "http://127.0.0.1:9000"
            ]
        );
        let mut any = Vec::new();
        allow_own_origins(&mut any, &server);
        assert!(
            any.is_empty(),
            "an empty list allows any origin and stays so"
        );
    }
}
