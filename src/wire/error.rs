//! Every error code the server sends (docs/PROTOCOL.md §4): in socket `error` messages,
//! HTTP error bodies (`error_code`), and the `error.code` of `agent_completed` and
//! `tool_completed`. Codes are matched on by clients and dashboards, so they are data
//! here, spelled once; a test keeps their string literals out of the rest of `src/`.

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $name:ident = $text:literal, retryable = $retry:literal; )+) => {
        /// A stable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $name, )+
        }

        impl ErrorCode {
            /// Every code, for documentation checks.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$name),+];

            /// The code as sent.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$name => $text,)+ }
            }

            /// Whether the same request may succeed if repeated later (the `retryable`
            /// flag of socket `error` messages).
            pub const fn retryable(self) -> bool {
                match self { $(Self::$name => $retry,)+ }
            }
        }
    };
}

error_codes! {
    /// The text frame is not JSON.
    BadJson = "BAD_JSON", retryable = false;
    /// JSON with an unknown `type`.
    UnknownType = "UNKNOWN_TYPE", retryable = false;
    /// A known type with missing or wrong fields, or data the store refuses (U+0000).
    BadMessage = "BAD_MESSAGE", retryable = false;
    /// A binary frame.
    UnsupportedFrame = "UNSUPPORTED_FRAME", retryable = false;
    /// A message over `websocket.max_message_bytes` (then close 1009).
    MessageTooLarge = "MESSAGE_TOO_LARGE", retryable = false;
    /// Over `websocket.messages_per_minute`.
    RateLimited = "RATE_LIMITED", retryable = true;
    /// No agent by that name.
    UnknownAgent = "UNKNOWN_AGENT", retryable = false;
    /// No such thread of this user.
    ThreadNotFound = "THREAD_NOT_FOUND", retryable = false;
    /// No such run of this user in progress.
    RunNotFound = "RUN_NOT_FOUND", retryable = false;
    /// The run is not running in that thread (a store-level refusal).
    RunNotActive = "RUN_NOT_ACTIVE", retryable = false;
    /// The server is draining: reconnect to another node or later.
    ShuttingDown = "SHUTTING_DOWN", retryable = true;
    /// The database cannot be reached or refuses connections: resend with the same id.
    StoreUnavailable = "STORE_UNAVAILABLE", retryable = true;
    /// A server-side storage fault; the server's log says more.
    StoreError = "STORE_ERROR", retryable = false;
    /// The database URL cannot be used (a configuration fault).
    StoreBadUrl = "STORE_BAD_URL", retryable = false;
    /// A first message other than `auth` in handshake mode (then close 1008).
    PolicyViolation = "POLICY_VIOLATION", retryable = false;
    /// No enabled token source carried a token.
    NoToken = "NO_TOKEN", retryable = false;
    /// The token is malformed, badly signed, or has wrong claims.
    InvalidToken = "INVALID_TOKEN", retryable = false;
    /// The token's `exp` passed.
    TokenExpired = "TOKEN_EXPIRED", retryable = false;
    /// The token is longer than `auth.jwt.max_token_bytes`.
    TokenTooLarge = "TOKEN_TOO_LARGE", retryable = false;
    /// Tokens in different places name different users.
    ConflictingTokens = "CONFLICTING_TOKENS", retryable = false;
    /// Authenticated but not allowed (a refresh for another user).
    Forbidden = "FORBIDDEN", retryable = false;
    /// No `auth` message within `auth.first_message_timeout_ms`.
    AuthTimeout = "AUTH_TIMEOUT", retryable = false;
    /// The node holds `server.max_connections` sockets.
    ConnectionLimit = "CONNECTION_LIMIT", retryable = true;
    /// The user already holds `websocket.max_connections_per_user` sockets (then 4429).
    UserConnectionLimit = "USER_CONNECTION_LIMIT", retryable = true;
    /// The key source (JWKS) is not reachable yet.
    AuthUnavailable = "AUTH_UNAVAILABLE", retryable = true;
    /// The `Origin` is not in `websocket.allowed_origins` (HTTP 403).
    OriginNotAllowed = "ORIGIN_NOT_ALLOWED", retryable = false;
    /// Not a WebSocket upgrade, or an unsupported version (HTTP 426).
    UpgradeRequired = "UPGRADE_REQUIRED", retryable = false;
    /// No route (HTTP 404).
    NotFound = "NOT_FOUND", retryable = false;
    /// The path does not answer that method (HTTP 405).
    MethodNotAllowed = "METHOD_NOT_ALLOWED", retryable = false;
    /// A request body or parameter is wrong (HTTP 400).
    BadRequest = "BAD_REQUEST", retryable = false;
    /// A query string is wrong (HTTP 400).
    BadQuery = "BAD_QUERY", retryable = false;
    /// A request body over the limit (HTTP 413).
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", retryable = false;
    /// `dev_token` has no HMAC secret to sign with (HTTP 409).
    NoSigningKey = "NO_SIGNING_KEY", retryable = false;
    /// Storage failed mid-run; the run stopped (`agent_completed.error`).
    StorageUnavailable = "STORAGE_UNAVAILABLE", retryable = true;
    /// The server restarted during the run (`agent_completed.error`, stored at boot).
    Interrupted = "INTERRUPTED", retryable = true;
    /// The node running the run died; another node closed it (`agent_completed.error`).
    RunInterrupted = "RUN_INTERRUPTED", retryable = true;
    /// The provider (model) failed.
    ProviderError = "PROVIDER_ERROR", retryable = true;
    /// The model still asked for tools after `max_steps` steps.
    MaxSteps = "MAX_STEPS", retryable = false;
    /// The run exceeded the agent's `run_timeout_ms`.
    RunTimeout = "RUN_TIMEOUT", retryable = true;
    /// A tool exceeded the agent's `tool_timeout_ms` (`tool_completed.error`).
    ToolTimeout = "TOOL_TIMEOUT", retryable = true;
    /// The model asked for a tool this agent does not have (`tool_completed.error`).
    ToolNotEnabled = "TOOL_NOT_ENABLED", retryable = false;
    /// A tool was called with arguments it cannot use (`tool_completed.error`).
    InvalidArguments = "INVALID_ARGUMENTS", retryable = false;
    /// A tool failed for its own reasons (`tool_completed.error`).
    ToolFailed = "TOOL_FAILED", retryable = false;
    /// A declared tool could not be reached (`tool_completed.error`).
    ToolUnavailable = "TOOL_UNAVAILABLE", retryable = true;
    /// An `http` tool answered a non-2xx status (`tool_completed.error`).
    ToolHttpStatus = "TOOL_HTTP_STATUS", retryable = false;
    /// A tool's result passed the tool's own `max_result_bytes` (`tool_completed.error`).
    ToolResultOverCap = "TOOL_RESULT_OVER_CAP", retryable = false;
    /// An `http` tool answered 2xx with a body that is not JSON (`tool_completed.error`).
    ToolBadResult = "TOOL_BAD_RESULT", retryable = false;
    /// The answer reached the agent's `max_answer_bytes`; the answer so far is kept.
    AnswerTooLong = "ANSWER_TOO_LONG", retryable = false;
    /// The run reached the agent's `max_run_events`.
    TooManyEvents = "TOO_MANY_EVENTS", retryable = false;
    /// A tool result exceeded the agent's `max_tool_result_bytes`.
    ToolResultTooLarge = "TOOL_RESULT_TOO_LARGE", retryable = false;
    /// The model endpoint could not be reached or answered 5xx (after retries).
    ModelUnavailable = "MODEL_UNAVAILABLE", retryable = true;
    /// The model endpoint kept answering 429 (after retries).
    ModelRateLimited = "MODEL_RATE_LIMITED", retryable = true;
    /// The model's stream broke off or stalled after it had begun.
    ModelStreamBroken = "MODEL_STREAM_BROKEN", retryable = true;
    /// The model sent something that is not the OpenAI streaming format.
    ModelBadResponse = "MODEL_BAD_RESPONSE", retryable = false;
    /// The model endpoint refused the request (4xx other than 429).
    ModelRequestRefused = "MODEL_REQUEST_REFUSED", retryable = false;
    /// The model stopped at `max_output_tokens`.
    ModelOutputLimit = "MODEL_OUTPUT_LIMIT", retryable = false;
    /// The model's content filter stopped the answer.
    ModelContentFiltered = "MODEL_CONTENT_FILTERED", retryable = false;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_upper_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'),
                "{s}"
            );
        }
    }
}
