//! The route table `portcullis routes` prints: every HTTP route and WebSocket path with
//! the auth that guards it, resolved from a validated [`Config`].

use std::fmt::Write as _;

use crate::config::{AuthMode, Config, Handler, KeySource};

/// What guards an HTTP handler.
pub fn handler_auth(h: Handler) -> &'static str {
    match h {
        Handler::Health | Handler::Ready | Handler::ClientConfig => "public",
        Handler::Metrics => "public (restrict at the proxy)",
        Handler::Console => "public page; connects with a dev token",
        Handler::DevToken => "public, development/test only",
        Handler::Threads | Handler::ThreadMessages => "jwt (Authorization: Bearer), owner only",
    }
}

/// How the WebSocket paths are guarded, in one line.
pub fn websocket_auth(config: &Config) -> String {
    let a = &config.auth;
    if a.mode == AuthMode::None {
        return "none (everyone is `anonymous`)".into();
    }
    let sources: Vec<&str> = a.token_sources.iter().map(|s| s.as_str()).collect();
    let (algs, key) = match &a.jwt {
        Some(j) => (
            j.algorithms
                .iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join("/"),
            match &j.key {
                KeySource::Secret(_) => "secret",
                KeySource::PublicKeyFile(_) => "public key file",
                KeySource::JwksFile(_) => "JWKS file",
                KeySource::Remote(r) => match r.location {
                    crate::config::RemoteLocation::JwksUrl(_) => "JWKS URL",
                    crate::config::RemoteLocation::OidcIssuer(_) => "OIDC discovery",
                },
            },
        ),
        None => (String::new(), "none"),
    };
    let mut s = format!(
        "jwt {algs} ({key}) via {}; reject {:?}",
        sources.join(", "),
        a.reject_at
    )
    .replace("AfterAccept", "after_accept")
    .replace("Handshake", "at handshake");
    if !config.websocket.allowed_origins.is_empty() {
        let _ = write!(
            s,
            "; origins {}",
            config.websocket.allowed_origins.join(" ")
        );
    }
    for b in &a.bypass {
        let from = if b.from.is_empty() {
            "any source".to_string()
        } else {
            b.from
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = write!(
            s,
            "; bypass `{}` (header {}, from {from}) as {}",
            b.name, b.header, b.user_id
        );
    }
    s
}

/// Renders the table.
pub fn render(config: &Config) -> String {
    let mut rows: Vec<[String; 4]> = vec![[
        "METHOD".into(),
        "PATH".into(),
        "HANDLER".into(),
        "AUTH".into(),
    ]];
    for r in &config.routes {
        rows.push([
            r.method.as_str().into(),
            r.path.clone(),
            r.handler.name().into(),
            handler_auth(r.handler).into(),
        ]);
    }
    let ws_auth = websocket_auth(config);
    rows.push([
        "WS".into(),
        config.websocket.path.clone(),
        "websocket".into(),
        ws_auth,
    ]);
    for a in &config.websocket.aliases {
        rows.push([
            "WS".into(),
            a.clone(),
            "websocket (alias)".into(),
            "same as above".into(),
        ]);
    }
    let w: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} ({}), listening on {}",
        config.name,
        config.kind.as_str(),
        config.server.listen
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        );
    }
    let _ = writeln!(
        out,
        "# plain GET on a WebSocket path answers 426; clients are told {}",
        config.client_websocket_url
    );
    out
}
