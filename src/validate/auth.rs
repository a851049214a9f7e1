//! Authentication rules: no open doors in production (mode `none`, query tokens, bypass
//! rules, inline secrets), algorithm lists of one family without `none`, keys that exist
//! and are strong enough, remote key sources over https with their options in range,
//! issuer and audience pinned where real users are.

use super::ctx::Ctx;
use super::schema_walk::closest;
use crate::config::raw::{AuthMode, BypassSection, JwtSection, TokenSource, defaults};
use crate::keypath::{KeyPath, kp};

/// Algorithm families; mixing them lets an attacker pick the weaker check.
pub fn family(alg: &str) -> Option<&'static str> {
    match alg {
        "HS256" | "HS384" | "HS512" => Some("HMAC"),
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => Some("RSA"),
        "ES256" | "ES384" => Some("ECDSA"),
        "EdDSA" => Some("EdDSA"),
        _ => None,
    }
}

const KNOWN_ALGS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// Runs the auth rules.
pub fn check(cx: &mut Ctx) {
    let auth = &cx.raw.auth;
    match auth.mode {
        AuthMode::None if cx.production() => cx.error(
            "E_AUTH_NONE_IN_PRODUCTION",
            kp("auth.mode"),
            "auth.mode = \"none\" lets anyone in as `anonymous` in production",
            "set auth.mode = \"jwt\" and configure [auth.jwt]",
        ),
        AuthMode::None if !cx.relaxed() => cx.warn(
            "W_AUTH_NONE",
            kp("auth.mode"),
            format!("auth.mode = \"none\" in {}", cx.kind.as_str()),
            "use jwt so staging exercises the production auth path",
        ),
        AuthMode::Jwt if auth.jwt.is_none() => cx.error(
            "E_JWT_MISSING",
            kp("auth"),
            "auth.mode = \"jwt\" but there is no [auth.jwt] table",
            "add [auth.jwt] with algorithms and a key (secret_env, public_key_file or jwks_url)",
        ),
        _ => {}
    }
    for (i, s) in auth.token_sources.iter().enumerate() {
        if auth.token_sources[..i].contains(s) {
            cx.error(
                "E_TOKEN_SOURCE_DUPLICATE",
                kp(&format!("auth.token_sources[{i}]")),
                format!("token source `{}` is listed twice", s.as_str()),
                "list each source once",
            );
        }
        if *s == TokenSource::Query {
            let at = kp(&format!("auth.token_sources[{i}]"));
            if cx.production() {
                cx.error("E_QUERY_TOKEN_IN_PRODUCTION", at, "tokens in ?access_token= end up in proxy and browser logs; refused in production", "remove \"query\"; browsers can use the subprotocol or a first `auth` message");
            } else if !cx.relaxed() {
                cx.warn(
                    "W_QUERY_TOKEN",
                    at,
                    "tokens in ?access_token= end up in proxy logs",
                    "prefer the subprotocol or first message",
                );
            }
        }
    }
    if !auth.token_sources.iter().any(|s| {
        matches!(
            s,
            TokenSource::Subprotocol | TokenSource::FirstMessage | TokenSource::Query
        )
    }) {
        cx.warn("W_NO_BROWSER_SOURCE", kp("auth.token_sources"), "browsers cannot set Authorization on a WebSocket, and no other token source is enabled", "add \"subprotocol\" (and/or \"first_message\")");
    }
    if let Some(jwt) = &auth.jwt {
        check_jwt(cx, jwt);
    }
    check_bypass(cx);
}

fn check_jwt(cx: &mut Ctx, jwt: &JwtSection) {
    let families = jwt_algorithms(cx, jwt);
    key_source(cx, jwt, &families);
    jwt_secret(cx, jwt);
    key_locations(cx, jwt);
    check_remote(cx, jwt);
    trust_limits(cx, jwt);
}

/// `E_JWT_ALG_NONE`, `E_JWT_ALG_UNKNOWN`, `E_JWT_ALG_MIXED`: only named algorithms of one
/// family, since a mix lets a public key be used as an HMAC secret. Returns the families.
fn jwt_algorithms(cx: &mut Ctx, jwt: &JwtSection) -> Vec<&'static str> {
    let mut families = Vec::new();
    for (i, a) in jwt.algorithms.iter().enumerate() {
        let at = kp(&format!("auth.jwt.algorithms[{i}]"));
        if a.eq_ignore_ascii_case("none") {
            cx.error(
                "E_JWT_ALG_NONE",
                at,
                "algorithm `none` accepts unsigned tokens",
                "remove \"none\"; list only the algorithm your issuer signs with",
            );
        } else if let Some(f) = family(a) {
            if !families.contains(&f) {
                families.push(f);
            }
        } else {
            let hint = closest(a, KNOWN_ALGS)
                .map(|c| format!("did you mean \"{c}\"?"))
                .unwrap_or_else(|| format!("use one of {}", KNOWN_ALGS.join(", ")));
            cx.error(
                "E_JWT_ALG_UNKNOWN",
                at,
                format!("unknown JWT algorithm `{a}`"),
                hint,
            );
        }
    }
    if families.len() > 1 {
        cx.error(
            "E_JWT_ALG_MIXED",
            kp("auth.jwt.algorithms"),
            format!(
                "algorithms mix {} families: a public key could be used as an HMAC secret",
                families.join(" and ")
            ),
            "keep algorithms of one family only",
        );
    }
    families
}

/// `E_JWT_KEY_MISSING`, `E_JWT_KEY_CONFLICT`, `E_JWT_KEY_FAMILY`: exactly one key source,
/// of the algorithms' family, or no token could ever verify.
fn key_source(cx: &mut Ctx, jwt: &JwtSection, families: &[&str]) {
    let sources = [
        jwt.secret.is_some(),
        jwt.secret_env.is_some(),
        jwt.jwks_url.is_some(),
        jwt.public_key_file.is_some(),
        jwt.oidc_issuer.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        0 => cx.error(
            "E_JWT_KEY_MISSING",
            kp("auth.jwt"),
            "no verification key: set one of secret_env, public_key_file, jwks_url, oidc_issuer",
            "HMAC: secret_env = \"PORTCULLIS_JWT_SECRET\"; RSA/EC: public_key_file, jwks_url or oidc_issuer",
        ),
        1 => {}
        _ => cx.error(
            "E_JWT_KEY_CONFLICT",
            kp("auth.jwt"),
            "more than one of secret, secret_env, public_key_file, jwks_url, oidc_issuer is set",
            "keep exactly one key source",
        ),
    }
    let hmac = families == ["HMAC"];
    let has_secret = jwt.secret.is_some() || jwt.secret_env.is_some();
    if families.len() == 1 && hmac != has_secret && sources.iter().filter(|s| **s).count() == 1 {
        let msg = if hmac {
            "HMAC algorithms need a shared secret, not a public key"
        } else {
            "public-key algorithms need public_key_file, jwks_url or oidc_issuer, not a shared secret"
        };
        cx.error(
            "E_JWT_KEY_FAMILY",
            kp("auth.jwt.algorithms"),
            msg,
            "match the key source to the algorithm family",
        );
    }
}

/// `E_INLINE_SECRET`, `E_JWT_SECRET_SHORT`: a shared secret comes from the environment
/// outside development and test, and is long enough not to be guessed.
fn jwt_secret(cx: &mut Ctx, jwt: &JwtSection) {
    if jwt.secret.is_some() && !cx.relaxed() {
        cx.error("E_INLINE_SECRET", kp("auth.jwt.secret"), format!("inline JWT secret in {}: it would live in the repository", cx.kind.as_str()), "use secret_env = \"PORTCULLIS_JWT_SECRET\" and set that variable from your secret store");
    }
    let secret = match (&jwt.secret, &jwt.secret_env) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(var)) => cx.env_var(kp("auth.jwt.secret_env"), var, "JWT secret"),
        _ => None,
    };
    if let Some(s) = secret
        && s.len() < 32
        && cx.kind != crate::config::raw::EnvironmentKind::Development
    {
        let at = if jwt.secret.is_some() {
            kp("auth.jwt.secret")
        } else {
            kp("auth.jwt.secret_env")
        };
        cx.error(
            "E_JWT_SECRET_SHORT",
            at,
            format!(
                "HMAC secret is {} bytes; at least 32 are required outside development",
                s.len()
            ),
            "generate one with `openssl rand -base64 48`",
        );
    }
}

/// The key file, or the JWKS file or URL, exists and is readable or well-formed
/// (`key_file`, `E_JWKS_URL`), so `serve` does not fail on it at boot.
fn key_locations(cx: &mut Ctx, jwt: &JwtSection) {
    if let Some(file) = &jwt.public_key_file {
        let hint = "the path is relative to the config directory";
        key_file(cx, "auth.jwt.public_key_file", "public key", file, hint);
    }
    if let Some(url) = &jwt.jwks_url {
        if let Some(file) = url.strip_prefix("file:") {
            let hint = "the path after file: is relative to the config directory";
            key_file(cx, "auth.jwt.jwks_url", "JWKS", file, hint);
        } else if let Err(why) = crate::auth::check_key_url(url, cx.relaxed()) {
            cx.error(
                "E_JWKS_URL",
                kp("auth.jwt.jwks_url"),
                format!("`{url}` {why}"),
                "use https://host/path or a file: path (http:// only in development and test)",
            );
        }
    }
}

/// `E_JWT_NO_ISSUER`, `E_JWT_NO_AUDIENCE` outside development and test (a token meant for
/// another service would pass), and `W_JWT_LEEWAY`.
fn trust_limits(cx: &mut Ctx, jwt: &JwtSection) {
    if !cx.relaxed() {
        if jwt.issuer.is_none() && jwt.oidc_issuer.is_none() {
            cx.error(
                "E_JWT_NO_ISSUER",
                kp("auth.jwt"),
                format!("{} accepts tokens from any issuer", cx.kind.as_str()),
                "set auth.jwt.issuer to your identity provider's `iss`",
            );
        }
        if jwt.audience.is_none() {
            cx.error(
                "E_JWT_NO_AUDIENCE",
                kp("auth.jwt"),
                format!("{} accepts tokens meant for any audience", cx.kind.as_str()),
                "set auth.jwt.audience to this service's `aud`",
            );
        }
    }
    if jwt.leeway_s > 120 {
        cx.warn(
            "W_JWT_LEEWAY",
            kp("auth.jwt.leeway_s"),
            format!(
                "{} s of clock skew keeps expired tokens alive",
                jwt.leeway_s
            ),
            "keep leeway_s at or below 60",
        );
    }
}

/// `E_KEY_FILE` at `key` when `file` (relative to the config directory) cannot be read.
fn key_file(cx: &mut Ctx, key: &str, what: &str, file: &str, hint: &str) {
    let path = cx.config_dir.join(file);
    if let Err(e) = std::fs::read(&path) {
        let message = format!("cannot read {what} file {}: {e}", path.display());
        cx.error("E_KEY_FILE", kp(key), message, hint);
    }
}

fn check_bypass(cx: &mut Ctx) {
    let rules = &cx.raw.auth.bypass;
    for (i, b) in rules.iter().enumerate() {
        let at = kp(&format!("auth.bypass[{i}]"));
        if cx.production() {
            cx.error(
                "E_BYPASS_IN_PRODUCTION",
                at.key("name"),
                format!(
                    "bypass rule `{}` would let test traffic skip auth in production",
                    b.name
                ),
                "remove [[auth.bypass]] from production (and from any file it extends)",
            );
            continue;
        }
        if rules[..i].iter().any(|o| o.name == b.name) {
            cx.error(
                "E_BYPASS_DUPLICATE",
                at.key("name"),
                format!("bypass rule name `{}` is used twice", b.name),
                "give each rule its own name",
            );
        }
        bypass_header(cx, &at, b);
        bypass_secret(cx, &at, b);
        bypass_sources(cx, &at, b);
    }
}

/// `E_BYPASS_HEADER`: the secret travels in a header of its own, not one that already
/// means something to a proxy, a browser or the auth path.
fn bypass_header(cx: &mut Ctx, at: &KeyPath, b: &BypassSection) {
    if matches!(
        b.header.to_ascii_lowercase().as_str(),
        "authorization" | "sec-websocket-protocol" | "cookie" | "user-agent" | "origin" | "host"
    ) {
        cx.error(
            "E_BYPASS_HEADER",
            at.key("header"),
            format!(
                "header `{}` carries other meaning and cannot hold a bypass secret",
                b.header
            ),
            "use a dedicated header such as X-Portcullis-Bypass",
        );
    }
}

/// `E_BYPASS_SECRET_CONFLICT`, `E_BYPASS_NO_SECRET(_ENV)`, `E_BYPASS_SECRET_SHORT`: one
/// secret, from the environment outside development and test, long enough not to guess.
fn bypass_secret(cx: &mut Ctx, at: &KeyPath, b: &BypassSection) {
    match (&b.secret, &b.secret_env) {
        (Some(_), Some(_)) => cx.error(
            "E_BYPASS_SECRET_CONFLICT",
            at.clone(),
            "both secret and secret_env are set",
            "keep secret_env",
        ),
        (None, None) if !cx.relaxed() => cx.error(
            "E_BYPASS_NO_SECRET_ENV",
            at.clone(),
            format!(
                "bypass rule `{}` in {} has no secret_env",
                b.name,
                cx.kind.as_str()
            ),
            "add secret_env = \"PORTCULLIS_BYPASS_SECRET\" and set it from your secret store",
        ),
        (None, None) => cx.error(
            "E_BYPASS_NO_SECRET",
            at.clone(),
            format!("bypass rule `{}` has no secret", b.name),
            "add secret_env (or, in development/test only, secret)",
        ),
        (Some(_), None) if !cx.relaxed() => cx.error(
            "E_BYPASS_NO_SECRET_ENV",
            at.key("secret"),
            format!(
                "bypass rule `{}` in {} has an inline secret instead of secret_env",
                b.name,
                cx.kind.as_str()
            ),
            "use secret_env and set the variable from your secret store",
        ),
        (_, Some(var)) => {
            if let Some(v) = cx.env_var(at.key("secret_env"), var, "bypass secret")
                && v.len() < 16
                && !cx.relaxed()
            {
                cx.error(
                    "E_BYPASS_SECRET_SHORT",
                    at.key("secret_env"),
                    format!(
                        "bypass secret is {} bytes; at least 16 are required",
                        v.len()
                    ),
                    "generate one with `openssl rand -base64 24`",
                );
            }
        }
        _ => {}
    }
}

/// `E_BYPASS_CIDR`, `W_BYPASS_ANY_SOURCE`: the source networks parse, and a rule outside
/// development and test names some (a leaked secret then works only from there).
fn bypass_sources(cx: &mut Ctx, at: &KeyPath, b: &BypassSection) {
    for (j, net) in b.from.iter().enumerate() {
        if net.parse::<ipnet::IpNet>().is_err() && net.parse::<std::net::IpAddr>().is_err() {
            cx.error(
                "E_BYPASS_CIDR",
                at.key("from").index(j),
                format!("`{net}` is not a CIDR network"),
                "write e.g. \"10.0.0.0/8\" or \"127.0.0.1/32\"",
            );
        }
    }
    if b.from.is_empty() && !cx.relaxed() {
        cx.warn(
            "W_BYPASS_ANY_SOURCE",
            at.key("from"),
            format!("bypass rule `{}` accepts any source address", b.name),
            "restrict it with from = [\"10.0.0.0/8\"] (your CI runners' network)",
        );
    }
}

/// The remote key source's own keys: a usable issuer URL that agrees with `issuer`, a
/// readable `ca_file`, refresh bounds in order, and none of them without a remote source.
fn check_remote(cx: &mut Ctx, jwt: &JwtSection) {
    if let Some(issuer) = &jwt.oidc_issuer {
        if let Err(why) = crate::auth::check_key_url(issuer, cx.relaxed()) {
            cx.error(
                "E_OIDC_ISSUER",
                kp("auth.jwt.oidc_issuer"),
                format!("`{issuer}` {why}"),
                "use the issuer URL your identity provider publishes, e.g. https://idp.example.com/",
            );
        }
        if let Some(pinned) = jwt.issuer.as_ref().filter(|i| *i != issuer) {
            cx.error(
                "E_JWT_ISSUER_CONFLICT",
                kp("auth.jwt.issuer"),
                format!("issuer `{pinned}` differs from oidc_issuer `{issuer}`: discovery only accepts the latter, so no token could pass both"),
                "remove auth.jwt.issuer (oidc_issuer is the required `iss`) or make them equal",
            );
        }
    }
    let remote = jwt.oidc_issuer.is_some()
        || jwt
            .jwks_url
            .as_ref()
            .is_some_and(|u| !u.starts_with("file:"));
    let options = [
        ("ca_file", jwt.ca_file.is_some()),
        ("jwks_min_refresh_s", jwt.jwks_min_refresh_s.is_some()),
        ("jwks_max_refresh_s", jwt.jwks_max_refresh_s.is_some()),
        ("jwks_timeout_ms", jwt.jwks_timeout_ms.is_some()),
    ];
    for (key, set) in options {
        if set && !remote {
            cx.error(
                "E_JWKS_OPTION_UNUSED",
                kp(&format!("auth.jwt.{key}")),
                format!("auth.jwt.{key} applies only to keys fetched from jwks_url (https://) or oidc_issuer, and this environment has neither: nothing would obey it"),
                format!("remove auth.jwt.{key}, or fetch the keys from your identity provider"),
            );
        }
    }
    if let (Some(min), Some(max)) = (
        jwt.jwks_min_refresh_s
            .or(remote.then(defaults::jwks_min_refresh_s)),
        jwt.jwks_max_refresh_s
            .or(remote.then(defaults::jwks_max_refresh_s)),
    ) && min > max
    {
        let at = match jwt.jwks_max_refresh_s {
            Some(_) => "auth.jwt.jwks_max_refresh_s",
            None => "auth.jwt.jwks_min_refresh_s",
        };
        cx.error(
            "E_JWKS_REFRESH_RANGE",
            kp(at),
            format!("keys are refreshed at least every {min} s and at most every {max} s: the minimum is above the maximum"),
            "keep jwks_min_refresh_s at or below jwks_max_refresh_s",
        );
    }
    if let Some(file) = &jwt.ca_file
        && let Err(e) = crate::tls::read_certs(&cx.config_dir.join(file))
    {
        cx.error(
            "E_CA_FILE",
            kp("auth.jwt.ca_file"),
            e.to_string(),
            "give a PEM file of CA certificates (BEGIN CERTIFICATE), relative to the config directory",
        );
    }
}

/// The `dev_token` handler signs tokens, so it needs an HMAC secret to sign with.
pub fn check_dev_token(cx: &mut Ctx) {
    let Some(i) = cx.raw.routes.iter().position(|r| r.handler == "dev_token") else {
        return;
    };
    let hmac = cx.raw.auth.mode == AuthMode::Jwt
        && cx.raw.auth.jwt.as_ref().is_some_and(|j| {
            (j.secret.is_some() || j.secret_env.is_some())
                && j.algorithms.iter().all(|a| family(a) == Some("HMAC"))
        });
    if !hmac {
        cx.error("E_DEV_TOKEN_KEY", kp(&format!("routes[{i}].handler")), "the dev_token handler can only sign with an HMAC secret, and this environment has none", "use auth.jwt with an HS256 secret, or remove the dev_token route");
    }
}
