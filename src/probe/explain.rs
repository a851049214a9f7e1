//! What a refusal means and where to look: the server's error codes (handshake bodies'
//! `error_code`, `error` messages' `code`) and WebSocket close codes (PROTOCOL.md §3),
//! each mapped to the likely cause and the configuration key to check.

use crate::agent::codes;

/// The hint for an error code the server sent, if the probe knows it.
pub fn code_hint(code: &str, origin: Option<&str>) -> Option<String> {
    let hint = match code {
        "ORIGIN_NOT_ALLOWED" => format!(
            "the Origin {} is refused before any token is read, so this is not a token problem: add it, exactly (scheme://host[:port]), to websocket.allowed_origins",
            origin.map_or("sent".to_string(), |o| format!("`{o}`"))
        ),
        "NO_TOKEN" => "no token reached the server: send one (--token, or --env NAME --sub USER to mint) in a place auth.token_sources enables (a proxy may strip Authorization; browsers can only use the subprotocol or first message)".into(),
        "INVALID_TOKEN" => "the token does not verify: it was signed with another key or names another issuer/audience than auth.jwt (secret_env / public_key_file / jwks_url, issuer, audience, algorithms)".into(),
        "TOKEN_EXPIRED" => "the token has expired: mint a fresh one; if clocks differ, auth.jwt.leeway_s".into(),
        "TOKEN_TOO_LARGE" => "the token is longer than auth.jwt.max_token_bytes".into(),
        "CONFLICTING_TOKENS" => "two token sources carry tokens for different users: send one token".into(),
        "FORBIDDEN" => "the token is valid, but this user is not allowed here (not a token or Origin problem)".into(),
        "AUTH_TIMEOUT" => "no auth message arrived within auth.first_message_timeout_ms: first-message clients must send {\"type\":\"auth\",\"token\":…} at once".into(),
        "CONNECTION_LIMIT" | "RATE_LIMITED" => "too many connections or attempts: server.max_connections, websocket.messages_per_minute; retry later".into(),
        "USER_CONNECTION_LIMIT" => "this user already holds websocket.max_connections_per_user open sockets (counted on every node with [components.rate_limiter] kind = \"redis\"): close one, or raise the cap".into(),
        "RUN_INTERRUPTED" | "INTERRUPTED" => "the node running the run stopped before it ended (a crash or kill; on Postgres its lease, server.run_lease_ms, expired): send the message again".into(),
        "AUTH_UNAVAILABLE" => "the JWT key source cannot be fetched (auth.jwt.jwks_url / oidc_issuer): GET the ready route for its last error".into(),
        "STORE_UNAVAILABLE" => "the database is not reachable yet: GET the ready route, and check services.<database>.url and that the database runs".into(),
        "SHUTTING_DOWN" => "the server is draining for a restart: retry shortly".into(),
        "UPGRADE_REQUIRED" => "the Upgrade header did not reach portcullis: the proxy must pass it (nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\")".into(),
        codes::STORAGE_UNAVAILABLE => "the run's events could not be stored: check the database (services.<database>)".into(),
        codes::PROVIDER_ERROR => "the agent's model endpoint failed: check the agent's service URL and model (check --online)".into(),
        codes::MODEL_UNAVAILABLE | codes::MODEL_RATE_LIMITED => "the agent's model endpoint was unreachable, failing or rate limiting after the retries: check services.<model>.url, max_retries, and declare a fallback agent".into(),
        codes::MODEL_REQUEST_REFUSED => "the model endpoint refused the request: check services.<model>.api_key_env and the agent's model name (the error message quotes the endpoint)".into(),
        codes::MODEL_STREAM_BROKEN | codes::MODEL_BAD_RESPONSE => "the model's stream broke off or was not the chat-completions format: check the endpoint (and services.<model>.read_timeout_ms)".into(),
        codes::ANSWER_TOO_LONG | codes::TOO_MANY_EVENTS | codes::TOOL_RESULT_TOO_LARGE | codes::MODEL_OUTPUT_LIMIT => "the run reached one of its bounds: the agent's max_answer_bytes, max_run_events, max_tool_result_bytes or max_output_tokens".into(),
        codes::RUN_TIMEOUT => "the run took longer than the agent's run_timeout_ms".into(),
        codes::MAX_STEPS => "the agent hit max_steps".into(),
        _ => return None,
    };
    Some(hint)
}

/// What a close code before `connection_established` means, and where to look.
pub fn close_hint(code: u16) -> &'static str {
    match code {
        1000 => {
            "the server closed normally before greeting: something in front of portcullis ended the connection"
        }
        1001 => "the server is shutting down: retry shortly",
        1002 => "the server saw a protocol error from the client",
        1008 => {
            "policy violation: in handshake mode (auth.reject_at = \"handshake\") the first message must be auth"
        }
        1009 => "a frame was larger than websocket.max_message_bytes",
        1011 => {
            "1011 is a server bug, or a server that accepts before its dependencies are ready: portcullis never closes with 1011 for a dependency (it answers 1013); check the server's log"
        }
        1013 => {
            "try again later: a dependency (the store, the JWT key source) is not ready or the server is overloaded; GET the ready route"
        }
        4401 => {
            "the token was refused (no token, invalid or expired): see the error code, auth.token_sources and auth.jwt"
        }
        4403 => "authenticated but forbidden here",
        4408 => "no auth message within auth.first_message_timeout_ms",
        4429 => "rate or connection limit: server.max_connections, websocket.messages_per_minute",
        4509 => {
            "the client read too slowly: its queue stayed over websocket.send_queue_bytes, or did not drain, for websocket.send_timeout_ms"
        }
        _ => "an unexpected close code: check the server's log",
    }
}
