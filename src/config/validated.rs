//! The validated configuration: the only configuration the server accepts.
//!
//! `Config` has no `Deserialize`; only [`crate::validate`] builds one, after every schema
//! and semantic rule passed. Secrets are resolved here (read from their `*_env` variables)
//! and wrapped in [`Secret`], whose `Debug` and `Display` never print the value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use jsonwebtoken::Algorithm;

mod tools;

pub use tools::{ToolConfig, ToolKindConfig, tools};

pub use super::raw::{
    AgentRegistryKind, AuthMode, EnvironmentKind, EventBusKind, HttpMethod, JwtKeysKind, LogFormat,
    MetricsKind, RateLimiterKind, RejectAt, RunContextKind, Scope, ServiceKind, SessionKind,
    StoreKind, TokenSource,
};

/// A secret value; formatting it prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String, bool);

impl Secret {
    /// Wraps a value read from a file or an environment variable.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into(), true)
    }

    /// A secret whose variable is not set, in a configuration checked with `--no-env`:
    /// nothing is built from it, and such a configuration is never served.
    pub fn unset() -> Self {
        Self(String::new(), false)
    }

    /// False for [`Secret::unset`].
    pub fn is_set(&self) -> bool {
        self.1
    }

    /// The value itself; call sites are the few places that must use it (signing,
    /// verifying, connecting).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A validated environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `environment.name`.
    pub name: String,
    /// `environment.kind`.
    pub kind: EnvironmentKind,
    /// Directory the environment files were read from (relative key files resolve here).
    pub config_dir: PathBuf,
    /// Base of relative data paths (`--data-dir`); SQLite URLs are already resolved.
    pub data_dir: PathBuf,
    /// Checked with `--no-env`: some secrets may be [`Secret::unset`]; never served.
    pub no_env: bool,
    /// Listener and process limits.
    pub server: ServerConfig,
    /// WebSocket endpoint.
    pub websocket: WebSocketConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Dependencies by name.
    pub services: BTreeMap<String, ServiceConfig>,
    /// HTTP routes, in declaration order.
    pub routes: Vec<Route>,
    /// The components the runtime builds.
    pub components: Components,
    /// Agents, in declaration order; exactly one has `default = true`.
    pub agents: Vec<AgentConfig>,
    /// Declared tools (`[tools.NAME]`), by name.
    pub tools: BTreeMap<String, ToolConfig>,
    /// The URL frontends dial.
    pub client_websocket_url: String,
    /// Log output format (resolved from the kind when not set).
    pub log_format: LogFormat,
    /// Tracing filter directive.
    pub log_level: String,
}

impl Config {
    /// The canonical path followed by every alias.
    pub fn websocket_paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.websocket.path.as_str())
            .chain(self.websocket.aliases.iter().map(String::as_str))
    }

    /// The agent used when a message names none.
    pub fn default_agent(&self) -> &AgentConfig {
        self.agents
            .iter()
            .find(|a| a.default)
            .unwrap_or(&self.agents[0])
    }

    /// The store service (kind `sqlite` or `postgres`), if one is declared.
    pub fn database(&self) -> Option<(&str, &ServiceConfig)> {
        self.services
            .iter()
            .find(|(_, s)| matches!(s.kind, ServiceKind::Sqlite | ServiceKind::Postgres))
            .map(|(n, s)| (n.as_str(), s))
    }

    /// The Redis service, if one is declared (cross-node bus and shared rate limits).
    pub fn redis(&self) -> Option<(&str, &ServiceConfig)> {
        self.services
            .iter()
            .find(|(_, s)| s.kind == ServiceKind::Redis)
            .map(|(n, s)| (n.as_str(), s))
    }
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Public base URL, without trailing slash.
    pub public_url: String,
    /// Idle timeout of the proxy in front.
    pub proxy_idle_timeout: Duration,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// Concurrent WebSocket connection cap.
    pub max_connections: u32,
    /// A run's lease (`server.run_lease_ms`): renewed every third of it while the run
    /// runs; an expired lease means the run's node died.
    pub run_lease: Duration,
    /// Native TLS, when `[server.tls]` is set.
    pub tls: Option<TlsConfig>,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Nodes serving this environment (`server.nodes`).
    pub nodes: u32,
}

/// `[server.tls]` with absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM).
    pub key_file: PathBuf,
}

/// `[websocket]`.
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// Canonical path.
    pub path: String,
    /// Alias paths.
    pub aliases: Vec<String>,
    /// Exact allowed `Origin` values; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Largest client frame.
    pub max_message_bytes: usize,
    /// Ping interval.
    pub heartbeat: Duration,
    /// Pong wait.
    pub pong_timeout: Duration,
    /// Outbound queue budget per connection, in bytes.
    pub send_queue_bytes: usize,
    /// How long the queue may stay over budget or undrained before the client is closed.
    pub send_timeout: Duration,
    /// Per-user message rate.
    pub messages_per_minute: u32,
    /// Per-user open socket cap, when set.
    pub max_connections_per_user: Option<u32>,
}

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `jwt` or `none`.
    pub mode: AuthMode,
    /// Enabled token sources, in protocol order.
    pub token_sources: Vec<TokenSource>,
    /// When bad tokens are refused.
    pub reject_at: RejectAt,
    /// First-message auth timeout.
    pub first_message_timeout: Duration,
    /// Present when `mode = "jwt"`.
    pub jwt: Option<JwtConfig>,
    /// Declared bypass rules (never in production).
    pub bypass: Vec<BypassRule>,
}

/// `[auth.jwt]` with its key material located.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Accepted algorithms, one family.
    pub algorithms: Vec<Algorithm>,
    /// Where the verification key comes from.
    pub key: KeySource,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Clock skew tolerance in seconds.
    pub leeway_s: u64,
    /// Longest accepted token.
    pub max_token_bytes: usize,
}

/// Where JWT verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// HMAC shared secret (inline in development/test, else from `secret_env`).
    Secret(Secret),
    /// A PEM public key file (absolute path).
    PublicKeyFile(PathBuf),
    /// A local JWKS document (absolute path).
    JwksFile(PathBuf),
    /// A JWKS fetched over HTTPS (directly or through OIDC discovery) and refreshed.
    Remote(RemoteKeySource),
}

/// Where a remote key set is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteLocation {
    /// `auth.jwt.jwks_url`: the JWKS document itself.
    JwksUrl(String),
    /// `auth.jwt.oidc_issuer`: discovery finds the `jwks_uri`.
    OidcIssuer(String),
}

/// A remote key set and how it is fetched.
#[derive(Debug, Clone)]
pub struct RemoteKeySource {
    /// The configured URL.
    pub location: RemoteLocation,
    /// Extra trust anchors (`auth.jwt.ca_file`, absolute path).
    pub ca_file: Option<PathBuf>,
    /// Fewest time between two fetches (`jwks_min_refresh_s`).
    pub min_refresh: Duration,
    /// Most time a fetched set is used (`jwks_max_refresh_s`).
    pub max_refresh: Duration,
    /// Time limit of one fetch (`jwks_timeout_ms`).
    pub timeout: Duration,
    /// Plain `http://` URLs are accepted (development and test only).
    pub allow_http: bool,
}

/// One `[[auth.bypass]]` rule with its secret resolved.
#[derive(Debug, Clone)]
pub struct BypassRule {
    /// Rule name.
    pub name: String,
    /// Header carrying the secret (lowercase).
    pub header: String,
    /// The value the header must equal.
    pub secret: Secret,
    /// Identity granted.
    pub user_id: String,
    /// Allowed source networks; empty allows any.
    pub from: Vec<IpNet>,
}

/// One service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// What it is.
    pub kind: ServiceKind,
    /// Resolved URL (may carry credentials, hence secret).
    pub url: Option<Secret>,
    /// Needed for readiness.
    pub required: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Pool size.
    pub pool_size: u32,
    /// Services this one needs.
    pub needs: Vec<String>,
    /// API key (`openai`), from `api_key_env` or inline (development/test only).
    pub api_key: Option<Secret>,
    /// Longest wait for the next bytes of a response (`openai`).
    pub read_timeout: Duration,
    /// Retries before the first token (`openai`).
    pub max_retries: u32,
    /// Extra trust anchors (`openai`, absolute path).
    pub ca_file: Option<PathBuf>,
}

/// Built-in HTTP handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Handler {
    /// Liveness.
    Health,
    /// Readiness.
    Ready,
    /// Frontend configuration.
    ClientConfig,
    /// The caller's threads.
    Threads,
    /// One thread's messages and events.
    ThreadMessages,
    /// Dev token minting (development and test only).
    DevToken,
    /// Prometheus metrics.
    Metrics,
    /// The browser console page.
    Console,
}

impl Handler {
    /// Every handler with its config name.
    pub const ALL: [(&'static str, Handler); 8] = [
        ("health", Handler::Health),
        ("ready", Handler::Ready),
        ("client_config", Handler::ClientConfig),
        ("threads", Handler::Threads),
        ("thread_messages", Handler::ThreadMessages),
        ("dev_token", Handler::DevToken),
        ("metrics", Handler::Metrics),
        ("console", Handler::Console),
    ];

    /// Looks a handler up by its config name.
    pub fn from_name(name: &str) -> Option<Handler> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, h)| *h == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Method.
    pub method: HttpMethod,
    /// Path (may contain `{param}` segments).
    pub path: String,
    /// Handler.
    pub handler: Handler,
}

/// One component: its implementation, scope and needs, as declared.
#[derive(Debug, Clone)]
pub struct Component<K> {
    /// Implementation.
    pub kind: K,
    /// Scope.
    pub scope: Scope,
    /// What it is built from.
    pub needs: Vec<String>,
}

/// Every component the runtime builds (the validator refuses a configuration that lacks
/// one, so each is present; `jwt_keys` only when `auth.mode = "jwt"`).
#[derive(Debug, Clone)]
pub struct Components {
    /// The store of record.
    pub store: Component<StoreKind>,
    /// Event delivery to the user's connections.
    pub event_bus: Component<EventBusKind>,
    /// JWT keys, when tokens are verified.
    pub jwt_keys: Option<Component<JwtKeysKind>>,
    /// The agents.
    pub agent_registry: Component<AgentRegistryKind>,
    /// Metrics.
    pub metrics: Component<MetricsKind>,
    /// The chat message rate limit; its scope says per user (process) or per socket.
    pub rate_limiter: Component<RateLimiterKind>,
    /// A connection.
    pub session: Component<SessionKind>,
    /// A run.
    pub run_context: Component<RunContextKind>,
}

/// Agent providers.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderConfig {
    /// Built-in deterministic provider.
    Scripted,
    /// OpenAI-compatible endpoint: the service's base URL and the model name.
    OpenAi {
        /// Service name.
        service: String,
        /// Model.
        model: String,
        /// `max_tokens` of each request.
        max_output_tokens: Option<u32>,
        /// Sampling temperature.
        temperature: Option<f64>,
    },
}

/// One `[[agents]]` entry.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: ProviderConfig,
    /// Tool names (validated against the built-in tool list).
    pub tools: Vec<String>,
    /// Default agent.
    pub default: bool,
    /// Step cap.
    pub max_steps: u32,
    /// Whole-run timeout.
    pub run_timeout: Duration,
    /// Per-tool timeout.
    pub tool_timeout: Duration,
    /// Bounds of one run's output.
    pub bounds: RunBounds,
    /// Instructions sent first to the model; `None` gives a short default.
    pub system_prompt: Option<String>,
    /// Earlier messages of the thread sent as context (0 for the scripted provider by
    /// default).
    pub history_messages: u32,
    /// Most bytes of earlier messages sent as context.
    pub history_max_bytes: usize,
    /// The agent whose model answers when this one's is unavailable.
    pub fallback: Option<String>,
}

impl Default for AgentConfig {
    /// A scripted agent with the schema's defaults (for embedding and tests).
    fn default() -> Self {
        use super::raw::defaults as d;
        Self {
            name: String::new(),
            provider: ProviderConfig::Scripted,
            tools: Vec::new(),
            default: false,
            max_steps: d::max_steps(),
            run_timeout: Duration::from_millis(d::run_timeout_ms()),
            tool_timeout: Duration::from_millis(d::tool_timeout_ms()),
            bounds: RunBounds::default(),
            system_prompt: None,
            history_messages: 0,
            history_max_bytes: d::history_max_bytes() as usize,
            fallback: None,
        }
    }
}

/// What one run may produce at most (issue 13: no answer can exhaust memory or disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunBounds {
    /// Bytes of the answer.
    pub max_answer_bytes: usize,
    /// Events of the run, `agent_started` and `agent_completed` included.
    pub max_run_events: u32,
    /// Bytes of one tool result's JSON.
    pub max_tool_result_bytes: usize,
}

impl Default for RunBounds {
    fn default() -> Self {
        use super::raw::defaults as d;
        Self {
            max_answer_bytes: d::max_answer_bytes() as usize,
            max_run_events: d::max_run_events(),
            max_tool_result_bytes: d::max_tool_result_bytes() as usize,
        }
    }
}
