//! What a refusal means and where to look: the server's error codes (handshake bodies'
//! `error_code`, `error` messages' `code`) and WebSocket close codes (docs/PROTOCOL.md §3),
//! each mapped to the likely cause and the configuration key to check.

use crate::wire::{CloseCode, ErrorCode};

/// The hint for an error code the server sent, if the probe knows it.
pub fn code_hint(code: &str, origin: Option<&str>) -> Option<String> {
    let known = ErrorCode::ALL.iter().find(|c| c.as_str() == code)?;
    let hint = match known {
        ErrorCode::OriginNotAllowed => format!(
            "the Origin {} is refused before any token is read, so this is not a token problem: add it, exactly (scheme://host[:port]), to websocket.allowed_origins",
            origin.map_or("sent".to_string(), |o| format!("`{o}`"))
        ),
        ErrorCode::NoToken => "no token reached the server: send one (--token, or --env NAME --sub USER to mint) in a place auth.token_sources enables (a proxy may strip Authorization; browsers can only use the subprotocol or first message)".into(),
        ErrorCode::InvalidToken => "the token does not verify: it was signed with another key or names another issuer/audience than auth.jwt (secret_env / public_key_file / jwks_url, issuer, audience, algorithms)".into(),
        ErrorCode::TokenExpired => "the token has expired: mint a fresh one; if clocks differ, auth.jwt.leeway_s".into(),
        ErrorCode::TokenTooLarge => "the token is longer than auth.jwt.max_token_bytes".into(),
        ErrorCode::ConflictingTokens => "two token sources carry tokens for different users: send one token".into(),
        ErrorCode::Forbidden => "the token is valid, but this user is not allowed here (not a token or Origin problem)".into(),
        ErrorCode::AuthTimeout => "no auth message arrived within auth.first_message_timeout_ms: first-message clients must send {\"type\":\"auth\",\"token\":…} at once".into(),
        ErrorCode::ConnectionLimit | ErrorCode::RateLimited => "too many connections or messages: server.max_connections, websocket.messages_per_minute; retry later".into(),
        ErrorCode::AuthUnavailable => "the JWT key source cannot be fetched (auth.jwt.jwks_url / oidc_issuer): GET the ready route for its last error".into(),
        ErrorCode::StoreUnavailable => "the database is not reachable yet: GET the ready route, and check services.<database>.url and that the database runs".into(),
        ErrorCode::ShuttingDown => "the server is draining for a restart: retry shortly".into(),
        ErrorCode::UpgradeRequired => "the Upgrade header did not reach portcullis: the proxy must pass it (nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\")".into(),
        ErrorCode::StorageUnavailable => "the run's events could not be stored: check the database (services.<database>)".into(),
        ErrorCode::ProviderError => "the agent's model endpoint failed: check the agent's service URL and model (check --online)".into(),
        ErrorCode::ModelUnavailable | ErrorCode::ModelRateLimited => "the agent's model endpoint was unreachable, failing or rate limiting after the retries: check services.<model>.url, max_retries, and declare a fallback agent".into(),
        ErrorCode::ModelRequestRefused => "the model endpoint refused the request: check services.<model>.api_key_env and the agent's model name (the error message quotes the endpoint)".into(),
        ErrorCode::ModelStreamBroken | ErrorCode::ModelBadResponse => "the model's stream broke off or was not the chat-completions format: check the endpoint (and services.<model>.read_timeout_ms)".into(),
        ErrorCode::AnswerTooLong | ErrorCode::TooManyEvents | ErrorCode::ToolResultTooLarge | ErrorCode::ModelOutputLimit => "the run reached one of its bounds: the agent's max_answer_bytes, max_run_events, max_tool_result_bytes or max_output_tokens".into(),
        ErrorCode::RunTimeout => "the run took longer than the agent's run_timeout_ms".into(),
        ErrorCode::MaxSteps => "the agent hit max_steps".into(),
        ErrorCode::UserConnectionLimit => "this user already holds websocket.max_connections_per_user open sockets (counted on every node with [components.rate_limiter] kind = \"redis\"): close one, or raise the cap".into(),
        ErrorCode::RunInterrupted | ErrorCode::Interrupted => "the node running the run stopped before it ended (a crash or kill; on Postgres its lease, server.run_lease_ms, expired): send the message again".into(),
        _ => return None,
    };
    Some(hint)
}

/// What a close code before `connection_established` means, and where to look.
pub fn close_hint(code: u16) -> &'static str {
    // Codes a portcullis server never sends are told apart by number.
    let Some(known) = CloseCode::from_code(code) else {
        return match code {
            1000 => {
                "the server closed normally before greeting: something in front of portcullis ended the connection"
            }
            1011 => {
                "1011 is a server bug, or a server that accepts before its dependencies are ready: portcullis never closes with 1011 for a dependency (it answers 1013); check the server's log"
            }
            _ => "an unexpected close code: check the server's log",
        };
    };
    match known {
        CloseCode::GoingAway => "the server is shutting down: retry shortly",
        CloseCode::ProtocolError => "the server saw a protocol error from the client",
        CloseCode::InvalidPayload => "the client sent a text frame that is not valid UTF-8",
        CloseCode::PolicyViolation => {
            "policy violation: in handshake mode (auth.reject_at = \"handshake\") the first message must be auth"
        }
        CloseCode::MessageTooBig => "a frame was larger than websocket.max_message_bytes",
        CloseCode::TryAgainLater => {
            "try again later: a dependency (the store, the JWT key source) is not ready or the server is overloaded; GET the ready route"
        }
        CloseCode::Unauthorized => {
            "the token was refused (no token, invalid or expired): see the error code, auth.token_sources and auth.jwt"
        }
        CloseCode::Forbidden => "authenticated but forbidden here",
        CloseCode::AuthTimeout => "no auth message within auth.first_message_timeout_ms",
        CloseCode::TooManyConnections => {
            "rate or connection limit: server.max_connections, websocket.messages_per_minute"
        }
        CloseCode::SlowConsumer => {
            "the client read too slowly: its queue stayed over websocket.send_queue_bytes, or did not drain, for websocket.send_timeout_ms"
        }
    }
}
