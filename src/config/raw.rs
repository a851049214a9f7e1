//! The raw configuration: exactly what an environment file may contain.
//!
//! These types are deserialized from the merged TOML (base file, environment file,
//! `PORTCULLIS_*` overrides) and are the source of `schema/portcullis.schema.json`.
//! Nothing outside `config/` and `validate/` reads them: the server only ever sees the
//! validated [`crate::config::Config`], which the validator alone can build.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod tools;

pub use tools::{MAX_RESULT_BYTES, ToolKind, ToolSection};

/// The pseudo-dependency (`needs = ["user_context"]`) that only exists once a connection
/// is authenticated.
pub const USER_CONTEXT: &str = "user_context";
/// One environment of a portcullis deployment (development, test, staging, production).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "portcullis environment")]
pub struct RawConfig {
    /// Name of another file in the same directory (without `.toml`) whose values this file
    /// extends. Tables are merged key by key; arrays (`routes`, `agents`, `bypass`) are
    /// replaced as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9][a-z0-9_-]*$"))]
    pub extends: Option<String>,
    /// Which environment this is; `kind` decides which safety rules apply.
    pub environment: EnvironmentSection,
    /// The HTTP listener and process limits.
    pub server: ServerSection,
    /// The WebSocket endpoint.
    pub websocket: WebSocketSection,
    /// How connections are authenticated.
    pub auth: AuthSection,
    /// External dependencies (database, Redis, model endpoint, JWKS host), by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSection>,
    /// HTTP routes served beside the WebSocket path(s).
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// The components the runtime builds, each at its scope from what it needs (the rule
    /// that keeps per-user state out of process-wide objects). `base.toml` declares them.
    #[serde(default)]
    pub components: ComponentsSection,
    /// Agent pipelines a chat message can be sent to.
    #[serde(default)]
    pub agents: Vec<AgentSection>,
    /// Tools declared once and referenced by name in `agents.tools` (kinds `http`, `mcp`).
    #[serde(default)]
    pub tools: BTreeMap<String, ToolSection>,
    /// What frontends are told (served by the `client_config` handler).
    pub client: ClientSection,
    /// Logging output.
    #[serde(default)]
    pub logging: LoggingSection,
}

/// The environment's identity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSection {
    /// Human name of the environment, e.g. `staging-eu`.
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// `development` and `test` may use inline secrets, dev tokens and bypass rules;
    /// `staging` and `production` may not (see the validator rules).
    pub kind: EnvironmentKind,
}

/// Safety class of an environment.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentKind {
    /// A developer's machine.
    Development,
    /// Automated tests and CI.
    Test,
    /// Pre-production, reachable by testers.
    Staging,
    /// Real users.
    Production,
}

impl EnvironmentKind {
    /// True where secrets may be written inline and dev tokens minted.
    pub fn is_relaxed(self) -> bool {
        matches!(self, Self::Development | Self::Test)
    }

    /// The lowercase name used in files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }
}

/// The HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Socket address to bind, e.g. `127.0.0.1:8080` or `0.0.0.0:8080`. Port 0 picks a free port.
    #[schemars(length(min = 1))]
    pub listen: String,
    /// The URL users reach this server at (scheme, host, optional port), e.g. `https://chat.example.com`.
    #[schemars(pattern(r"^https?://[^/\s]+/?$"))]
    pub public_url: String,
    /// Idle timeout of the proxy or load balancer in front (ms). Heartbeats must be shorter.
    #[serde(default = "defaults::proxy_idle_timeout_ms")]
    #[schemars(range(min = 1000, max = 3_600_000))]
    pub proxy_idle_timeout_ms: u64,
    /// On SIGTERM, how long in-flight runs may finish before sockets close with 1001 (ms).
    #[serde(default = "defaults::shutdown_grace_ms")]
    #[schemars(range(min = 0, max = 600_000))]
    pub shutdown_grace_ms: u64,
    /// Cap on concurrent WebSocket connections; further ones get 4429 / 429.
    #[serde(default = "defaults::max_connections")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_connections: u32,
    /// How long a run's lease lasts (ms). A node renews the leases of its running runs
    /// every third of this; any node closes a run whose lease expired (its node died) with
    /// `agent_completed` status `error`, code `RUN_INTERRUPTED`. Shorter closes a dead
    /// node's runs sooner; longer tolerates longer database stalls.
    #[serde(default = "defaults::run_lease_ms")]
    #[schemars(range(min = 1000, max = 600_000))]
    pub run_lease_ms: u64,
    /// Serve `https://` and `wss://` directly (no proxy needed). The files are re-read when
    /// they change or on SIGHUP, without dropping open connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    /// Networks (CIDR) of the reverse proxies or load balancers in front. Only a peer inside
    /// one of them is believed when it sends `Forwarded` / `X-Forwarded-For`; that address is
    /// then the client's (bypass `from`, logs). Empty: those headers are ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// How many portcullis nodes serve this environment behind the load balancer. Above 1,
    /// a user's sockets may sit on different nodes, so the event bus must be `redis`.
    #[serde(default = "defaults::nodes")]
    #[schemars(range(min = 1, max = 1000))]
    pub nodes: u32,
}

/// `[server.tls]`: the certificate chain and private key, PEM files relative to the config
/// directory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file with the server certificate first, then its intermediates.
    #[schemars(length(min = 1))]
    pub cert_file: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of that certificate.
    #[schemars(length(min = 1))]
    pub key_file: String,
}

/// The WebSocket endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSection {
    /// The canonical WebSocket path, e.g. `/websocket`.
    #[schemars(pattern(r"^/[A-Za-z0-9._~/-]*$"))]
    pub path: String,
    /// Further paths served by the same handler, e.g. `["/ws"]`.
    #[serde(default)]
    #[schemars(inner(pattern(r"^/[A-Za-z0-9._~/-]*$")))]
    pub aliases: Vec<String>,
    /// Exact `Origin` values allowed to open a socket. Empty: any origin (refused outside
    /// development and test).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest accepted client frame in bytes; larger ones close the socket with 1009.
    #[serde(default = "defaults::max_message_bytes")]
    #[schemars(range(min = 256, max = 16_777_216))]
    pub max_message_bytes: u32,
    /// Interval of server pings (ms). Must be below `server.proxy_idle_timeout_ms`.
    #[serde(default = "defaults::heartbeat_ms")]
    #[schemars(range(min = 1000, max = 600_000))]
    pub heartbeat_ms: u64,
    /// How long to wait for a pong before closing the socket (ms).
    #[serde(default = "defaults::pong_timeout_ms")]
    #[schemars(range(min = 500, max = 600_000))]
    pub pong_timeout_ms: u64,
    /// Outbound bytes one connection may have waiting (default 1 MiB).
    /// A client whose queue stays over this for `send_timeout_ms` is closed with 4509, one
    /// over twice this at once; waiting `agent_response` deltas of a run are coalesced.
    #[serde(default = "defaults::send_queue_bytes")]
    #[schemars(range(min = 16_384, max = 268_435_456))]
    pub send_queue_bytes: u32,
    /// How long (ms) a client may leave its queue over budget or undrained (default 10 s).
    /// Over `send_queue_bytes`, or holding messages while nothing is written to the socket,
    /// for this long, the client is closed with 4509.
    #[serde(default = "defaults::send_timeout_ms")]
    #[schemars(range(min = 100, max = 600_000))]
    pub send_timeout_ms: u64,
    /// Per-user chat messages per minute; more get `RATE_LIMITED` (connection kept).
    #[serde(default = "defaults::messages_per_minute")]
    #[schemars(range(min = 1, max = 100_000))]
    pub messages_per_minute: u32,
    /// Open sockets one user may hold at once; one more is closed with 4429
    /// (`USER_CONNECTION_LIMIT`) after authentication. Counted on this node, or across every
    /// node with `[components.rate_limiter] kind = "redis"`. Absent: no per-user cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_connections_per_user: Option<u32>,
}

/// How connections are authenticated.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `jwt` verifies tokens; `none` lets everyone in as `anonymous` (development only).
    pub mode: AuthMode,
    /// Where tokens are read from, tried in the order of docs/PROTOCOL.md §1.
    #[serde(default = "defaults::token_sources")]
    #[schemars(length(min = 1))]
    pub token_sources: Vec<TokenSource>,
    /// Refuse bad tokens after the upgrade (an `error` message, then 4401) or during the
    /// handshake (HTTP 401/403).
    #[serde(default)]
    pub reject_at: RejectAt,
    /// How long a connection may stay unauthenticated waiting for an `auth` message (ms).
    #[serde(default = "defaults::first_message_timeout_ms")]
    #[schemars(range(min = 100, max = 120_000))]
    pub first_message_timeout_ms: u64,
    /// JWT verification settings (required when `mode = "jwt"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSection>,
    /// Declared test-traffic bypass rules; never allowed in production.
    #[serde(default)]
    pub bypass: Vec<BypassSection>,
}

/// Authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Verify a JWT on every connection.
    Jwt,
    /// No authentication (development only).
    None,
}

/// A place a token can be read from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer <jwt>`.
    Header,
    /// `Sec-WebSocket-Protocol: portcullis.v1, jwt.<token>`.
    Subprotocol,
    /// `?access_token=` (refused in production).
    Query,
    /// A first `{"type":"auth","token":…}` message.
    FirstMessage,
}

impl TokenSource {
    /// The name as written in `auth.token_sources`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Subprotocol => "subprotocol",
            Self::Query => "query",
            Self::FirstMessage => "first_message",
        }
    }
}

/// When a bad or missing token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectAt {
    /// Upgrade, send one `error` message, close with 4401/4403.
    #[default]
    AfterAccept,
    /// Answer the upgrade request with 401/403/429/503.
    Handshake,
}

/// JWT verification.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// Accepted algorithms; one family only (HMAC, RSA, ECDSA or EdDSA). `none` is never accepted.
    #[schemars(length(min = 1))]
    pub algorithms: Vec<String>,
    /// Inline HMAC secret (development and test only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Environment variable holding the HMAC secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Z_][A-Z0-9_]*$"))]
    pub secret_env: Option<String>,
    /// URL of a JWKS document (`https://…`), fetched at boot and refreshed in the
    /// background, or `file:` path of a local one read once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// OpenID Connect issuer (`https://…`): keys come from the `jwks_uri` of
    /// `<issuer>/.well-known/openid-configuration`, whose `issuer` must equal this value
    /// exactly. Tokens must then carry it as `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_issuer: Option<String>,
    /// PEM file of extra CA certificates trusted when fetching `jwks_url` or `oidc_issuer`
    /// (beside the system store, which honours `SSL_CERT_FILE`), relative to the config
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Remote keys: fewest seconds between two fetches. A token naming an unknown `kid`
    /// refetches at most this often (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub jwks_min_refresh_s: Option<u64>,
    /// Remote keys: most seconds a fetched key set is used before it is refreshed; the
    /// response's `Cache-Control: max-age` is obeyed between the min and this (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 604_800))]
    pub jwks_max_refresh_s: Option<u64>,
    /// Remote keys: time limit of one fetch, connection and TLS included (ms, default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 60_000))]
    pub jwks_timeout_ms: Option<u64>,
    /// PEM file with the public key (RSA, EC or Ed25519), relative to the config directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<String>,
    /// Required `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew tolerated for `exp` and `nbf` (seconds).
    #[serde(default = "defaults::leeway_s")]
    #[schemars(range(min = 0, max = 300))]
    pub leeway_s: u64,
    /// Longest accepted token in bytes.
    #[serde(default = "defaults::max_token_bytes")]
    #[schemars(range(min = 128, max = 65_536))]
    pub max_token_bytes: u32,
}

/// A declared bypass rule for test traffic.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BypassSection {
    /// Rule name; connections it admits report `auth = "bypass:<name>"`.
    #[schemars(pattern(r"^[a-z0-9][a-z0-9_-]*$"))]
    pub name: String,
    /// Request header carrying the bypass secret, e.g. `X-Portcullis-Bypass`.
    #[schemars(pattern(r"^[A-Za-z0-9-]+$"))]
    pub header: String,
    /// Environment variable holding the secret the header must equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Z_][A-Z0-9_]*$"))]
    pub secret_env: Option<String>,
    /// Inline secret (development and test only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The identity the connection gets.
    #[schemars(length(min = 1, max = 256))]
    pub user_id: String,
    /// Source networks (CIDR) allowed to use the rule; empty means any source.
    #[serde(default)]
    pub from: Vec<String>,
}

/// An external dependency.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// What the service is.
    pub kind: ServiceKind,
    /// Connection URL (no credentials outside development and test; use `url_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Environment variable holding the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Z_][A-Z0-9_]*$"))]
    pub url_env: Option<String>,
    /// A required service must answer before the server reports ready.
    #[serde(default = "defaults::yes")]
    pub required: bool,
    /// Connect timeout (ms).
    #[serde(default = "defaults::connect_timeout_ms")]
    #[schemars(range(min = 10, max = 120_000))]
    pub connect_timeout_ms: u64,
    /// Other services this one needs (e.g. a model endpoint behind a token service).
    #[serde(default)]
    pub needs: Vec<String>,
    /// Connection pool size (databases and Redis).
    #[serde(default = "defaults::pool_size")]
    #[schemars(range(min = 1, max = 1000))]
    pub pool_size: u32,
    /// Environment variable holding the API key (`openai`), sent as `Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Z_][A-Z0-9_]*$"))]
    pub api_key_env: Option<String>,
    /// Inline API key (`openai`; development and test only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Longest wait for the next bytes of a response (ms; `openai`): a model that stalls
    /// this long ends the run `MODEL_STREAM_BROKEN` (or is retried before its first token).
    /// Default 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 600_000))]
    pub read_timeout_ms: Option<u64>,
    /// Retries of a request refused with 429/5xx or not connected, before its first
    /// token (`openai`; jittered exponential backoff, `Retry-After` honoured).
    /// Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub max_retries: Option<u32>,
    /// Extra CA certificates (PEM) trusted for the service's https URL besides the
    /// system's (`openai`; a private CA), relative to the config directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// Kinds of external dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// SQLite file (`sqlite://data/dev.db`): the embedded default store.
    Sqlite,
    /// PostgreSQL (`postgres://…`): the store of record in production.
    Postgres,
    /// Redis (`redis://…`): cross-node event bus and shared rate limits.
    Redis,
    /// An OpenAI-compatible model endpoint (`https://…/v1`).
    Openai,
    /// Any other HTTP dependency (e.g. a JWKS host).
    Http,
}

/// One HTTP route.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// HTTP method.
    pub method: HttpMethod,
    /// Path; `{name}` segments are parameters, e.g. `/api/threads/{thread_id}/messages`.
    #[schemars(pattern(r"^/[A-Za-z0-9._~/{}-]*$"))]
    pub path: String,
    /// Built-in handler name: `health`, `ready`, `client_config`, `threads`,
    /// `thread_messages`, `dev_token`, `metrics` or `console`.
    #[schemars(length(min = 1))]
    pub handler: String,
}

/// HTTP methods a route can declare.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl HttpMethod {
    /// The method as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }
}

/// The components the runtime builds, by role. Each role has its own implementations
/// (`kind`), the scopes it can live in, and the dependencies (`needs`) it is built from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentsSection {
    /// The store of record: threads, messages, runs and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<ComponentSection<StoreKind>>,
    /// Delivers stored events to every connection of their user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_bus: Option<ComponentSection<EventBusKind>>,
    /// JWT verification keys (from `[auth.jwt]`; needed when `auth.mode = "jwt"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_keys: Option<ComponentSection<JwtKeysKind>>,
    /// The `[[agents]]` pipelines with their providers and tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_registry: Option<ComponentSection<AgentRegistryKind>>,
    /// Prometheus metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ComponentSection<MetricsKind>>,
    /// The chat message rate limit (`websocket.messages_per_minute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<ComponentSection<RateLimiterKind>>,
    /// One WebSocket connection's state, built from the verified identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<ComponentSection<SessionKind>>,
    /// One agent run's context, built per user message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_context: Option<ComponentSection<RunContextKind>>,
}

/// One component: its implementation, its scope and what it is built from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentSection<K> {
    /// Which implementation is built.
    pub kind: K,
    /// `process` (built once at boot), `connection` (per socket, from the verified identity)
    /// or `run` (per user message).
    pub scope: Scope,
    /// What it is built from: other components, services, or `user_context`. Must name
    /// exactly what its kind uses.
    #[serde(default)]
    pub needs: Vec<String>,
}

/// Implementations of the `store` component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// SQL on the database service it needs (`sqlite` or `postgres`).
    Sql,
}

/// Implementations of the `event_bus` component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventBusKind {
    /// In this process only: connections on this node.
    Local,
    /// Across nodes through Redis pub/sub (needs the Redis service); the store fills
    /// whatever Redis drops.
    Redis,
}

/// Implementations of the `jwt_keys` component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JwtKeysKind {
    /// The key source `[auth.jwt]` names (secret, PEM file, JWKS file or URL).
    Jwt,
}

/// Implementations of the `agent_registry` component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentRegistryKind {
    /// The `[[agents]]` of this file; needs the services those agents call.
    Agents,
}

/// Implementations of the `metrics` component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricsKind {
    /// Prometheus text exposition (the `metrics` handler).
    Prometheus,
}

/// Implementations of the `rate_limiter` component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimiterKind {
    /// Token buckets in this process: with `scope = "process"` one per user (shared by
    /// their sockets on this node), with `scope = "connection"` one per socket.
    Local,
    /// One token bucket per user in Redis, shared by every node (`scope = "process"`,
    /// `needs` the Redis service). While Redis does not answer, each node falls back to
    /// its local bucket and `/metrics` says so.
    Redis,
}

/// Implementations of the `session` component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// A WebSocket connection speaking `portcullis.v1`.
    Websocket,
}

/// Implementations of the `run_context` component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunContextKind {
    /// One agent run: the user, the thread, cancellation and the user's tools.
    AgentRun,
}

/// Lifetime of a component.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Built once at boot; shared by every connection.
    Process,
    /// Built per WebSocket connection from the verified identity.
    Connection,
    /// Built per user message.
    Run,
}

impl Scope {
    /// The lowercase name used in files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Connection => "connection",
            Self::Run => "run",
        }
    }
}

/// An agent pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Name clients use in `user_message.agent`.
    #[schemars(pattern(r"^[a-z0-9][a-z0-9_-]*$"))]
    pub name: String,
    /// `scripted` (built-in, deterministic, no network) or `openai` (needs `service`).
    #[schemars(length(min = 1))]
    pub provider: String,
    /// Service (kind `openai`) the `openai` provider calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Model name passed to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tools the agent may call: the built-in `clock`, `calculator`, `thread_history`, or
    /// the name of a `[tools.NAME]` declaration.
    #[serde(default)]
    pub tools: Vec<String>,
    /// The agent used when a message names none. Exactly one agent is the default.
    #[serde(default)]
    pub default: bool,
    /// Most model/tool steps in one run.
    #[serde(default = "defaults::max_steps")]
    #[schemars(range(min = 1, max = 64))]
    pub max_steps: u32,
    /// Whole-run timeout (ms); the run ends with status `timeout`.
    #[serde(default = "defaults::run_timeout_ms")]
    #[schemars(range(min = 100, max = 3_600_000))]
    pub run_timeout_ms: u64,
    /// Per-tool-call timeout (ms).
    #[serde(default = "defaults::tool_timeout_ms")]
    #[schemars(range(min = 10, max = 600_000))]
    pub tool_timeout_ms: u64,
    /// Longest answer of one run (bytes); past it the run ends `error` `ANSWER_TOO_LONG`,
    /// the answer so far kept.
    #[serde(default = "defaults::max_answer_bytes")]
    #[schemars(range(min = 256, max = 4_194_304))]
    pub max_answer_bytes: u64,
    /// Most events one run may emit; past it the run ends `error` `TOO_MANY_EVENTS`.
    #[serde(default = "defaults::max_run_events")]
    #[schemars(range(min = 8, max = 1_000_000))]
    pub max_run_events: u32,
    /// Largest tool result (bytes of its JSON); a larger one ends the run `error`
    /// `TOOL_RESULT_TOO_LARGE` and is never stored nor sent to the model.
    #[serde(default = "defaults::max_tool_result_bytes")]
    #[schemars(range(min = 256, max = 4_194_304))]
    pub max_tool_result_bytes: u64,
    /// Instructions sent first to the model (`openai`); a short default names the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65_536))]
    pub system_prompt: Option<String>,
    /// Earlier messages of the thread sent to the model as context (`openai`; default
    /// 20; the scripted provider reads none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 500))]
    pub history_messages: Option<u32>,
    /// Most bytes of earlier messages sent as context; the oldest are left out first.
    #[serde(default = "defaults::history_max_bytes")]
    #[schemars(range(min = 256, max = 1_048_576))]
    pub history_max_bytes: u64,
    /// Most tokens the model may generate per step (`max_tokens`; `openai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2 (`openai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
    /// Another agent whose model answers when this one's is unavailable (connect errors,
    /// 429 or 5xx after retries, before the first token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// What frontends are told.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// The WebSocket URL frontends dial; its path must be a declared WebSocket path.
    #[schemars(pattern(r"^wss?://[^/\s]+/\S*$"))]
    pub websocket_url: String,
}

/// Logging output.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    /// `json` or `pretty`; default: `json` in staging and production, `pretty` elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    /// A tracing filter, e.g. `info,portcullis=debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// Default values, in one place so the schema, `explain` and the server agree.
pub mod defaults {
    use super::TokenSource;

    pub fn proxy_idle_timeout_ms() -> u64 {
        60_000
    }
    pub fn shutdown_grace_ms() -> u64 {
        10_000
    }
    pub fn max_connections() -> u32 {
        10_000
    }
    pub fn run_lease_ms() -> u64 {
        15_000
    }
    pub fn nodes() -> u32 {
        1
    }
    pub fn max_message_bytes() -> u32 {
        65_536
    }
    pub fn heartbeat_ms() -> u64 {
        25_000
    }
    pub fn pong_timeout_ms() -> u64 {
        10_000
    }
    pub fn send_queue_bytes() -> u32 {
        1_048_576
    }
    pub fn send_timeout_ms() -> u64 {
        10_000
    }
    pub fn messages_per_minute() -> u32 {
        120
    }
    pub fn token_sources() -> Vec<TokenSource> {
        vec![
            TokenSource::Header,
            TokenSource::Subprotocol,
            TokenSource::FirstMessage,
        ]
    }
    pub fn first_message_timeout_ms() -> u64 {
        5_000
    }
    pub fn leeway_s() -> u64 {
        30
    }
    pub fn max_token_bytes() -> u32 {
        8_192
    }
    pub fn jwks_min_refresh_s() -> u64 {
        30
    }
    pub fn jwks_max_refresh_s() -> u64 {
        600
    }
    pub fn jwks_timeout_ms() -> u64 {
        5_000
    }
    pub fn yes() -> bool {
        true
    }
    pub fn connect_timeout_ms() -> u64 {
        2_000
    }
    pub fn pool_size() -> u32 {
        10
    }
    pub fn max_steps() -> u32 {
        8
    }
    pub fn run_timeout_ms() -> u64 {
        60_000
    }
    pub fn tool_timeout_ms() -> u64 {
        5_000
    }
    pub fn max_answer_bytes() -> u64 {
        65_536
    }
    pub fn max_run_events() -> u32 {
        16_384
    }
    pub fn max_tool_result_bytes() -> u64 {
        65_536
    }
    pub fn history_messages() -> u32 {
        20
    }
    pub fn history_max_bytes() -> u64 {
        32_768
    }
    pub fn read_timeout_ms() -> u64 {
        60_000
    }
    pub fn max_retries() -> u32 {
        2
    }
}
