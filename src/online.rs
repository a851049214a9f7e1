//! `check --online`: after the offline checks pass, connect to every declared service —
//! the database (and its migrations), Redis (`PING`), model endpoints (`GET {url}/models`
//! listing each agent's model), HTTP services (`HEAD`), the remote JWT key source
//! (a fetch with usable keys), declared tools (an MCP server listing every allowed tool,
//! a `HEAD` on an HTTP tool's URL) — each timed, each failure a coded finding at the
//! service's `file:line`. A required service failing is an error (exit 1); an optional
//! one a warning.

mod tools;
mod web;

use std::time::{Duration, Instant};

use crate::compile::Compiled;
use crate::config::{ProviderConfig, ServiceConfig, ServiceKind};
use crate::diagnostic::{Finding, OnlineCheck};
use crate::keypath::{KeyPath, kp};
use crate::store::MigrationStatus;

/// What one service check found.
struct Outcome {
    detail: String,
    problems: Vec<Problem>,
}

/// How a problem counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// An error when the service is required, else its warning twin (`W_…`).
    AsRequired,
    /// Always an error (a model the endpoint does not serve).
    Error,
    /// Always a warning (migrations `serve` applies itself).
    Warning,
}

/// One finding of a check, before it is placed.
struct Problem {
    code: &'static str,
    level: Level,
    /// Where it points; the service's `url` when absent.
    path: Option<KeyPath>,
    message: String,
    hint: String,
}

impl Problem {
    fn new(code: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Problem {
        Problem {
            code,
            level: Level::AsRequired,
            path: None,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// Every check's line and findings.
pub struct Online {
    /// One per service asked.
    pub checks: Vec<OnlineCheck>,
    /// Coded findings, not yet placed in the files.
    pub findings: Vec<Finding>,
}

/// Runs every check concurrently.
pub async fn check(compiled: &Compiled) -> Online {
    let config = &compiled.config;
    let services = config.services.iter().map(|(name, s)| async move {
        let started = Instant::now();
        let outcome = service(name, s, compiled).await;
        let ms = started.elapsed().as_millis() as u64;
        finish(
            &format!("services.{name}"),
            kind_name(s.kind),
            s.required,
            ms,
            outcome,
        )
    });
    let tools = config.tools.iter().map(|(name, t)| async move {
        // Required when an agent lists it: an unused declaration only warns.
        let required = config.agents.iter().any(|a| a.tools.contains(name));
        let kind = match t.kind {
            crate::config::ToolKindConfig::Http { .. } => "http",
            crate::config::ToolKindConfig::Mcp { .. } => "mcp",
        };
        let started = Instant::now();
        let limit = t.timeout.max(Duration::from_secs(2));
        let outcome = tools::tool(name, t, limit).await;
        let ms = started.elapsed().as_millis() as u64;
        finish(&format!("tools.{name}"), kind, required, ms, outcome)
    });
    let (mut results, tools) = futures_util::future::join(
        futures_util::future::join_all(services),
        futures_util::future::join_all(tools),
    )
    .await;
    results.extend(tools);
    if let Some((key, outcome, ms)) = key_source(compiled).await {
        results.push(finish(key, "key_source", true, ms, outcome));
    }
    let mut online = Online {
        checks: Vec::new(),
        findings: Vec::new(),
    };
    for (check, findings) in results {
        online.checks.push(check);
        online.findings.extend(findings);
    }
    online
}

fn kind_name(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Sqlite => "sqlite",
        ServiceKind::Postgres => "postgres",
        ServiceKind::Redis => "redis",
        ServiceKind::Openai => "openai",
        ServiceKind::Http => "http",
    }
}

fn finish(
    name: &str,
    kind: &str,
    required: bool,
    ms: u64,
    outcome: Outcome,
) -> (OnlineCheck, Vec<Finding>) {
    let url_key = kp(&format!("{name}.url"));
    let findings: Vec<Finding> = outcome
        .problems
        .into_iter()
        .map(|p| {
            let path = p.path.unwrap_or_else(|| url_key.clone());
            let message = format!("{name}: {} ({ms} ms)", p.message);
            match (p.level, required) {
                (Level::Error, _) | (Level::AsRequired, true) => {
                    Finding::error(p.code, path, message, p.hint)
                }
                (Level::Warning, _) => Finding::warning(p.code, path, message, p.hint),
                (Level::AsRequired, false) => {
                    Finding::warning(warning_code(p.code), path, message, p.hint)
                }
            }
        })
        .collect();
    // Warnings (pending migrations, an optional service down) leave the check passed.
    let ok = findings
        .iter()
        .all(|f| f.severity == crate::diagnostic::Severity::Warning);
    let check = OnlineCheck {
        name: name.to_string(),
        kind: kind.to_string(),
        required,
        ok,
        ms,
        detail: outcome.detail,
    };
    (check, findings)
}

/// The warning twin of an error code, for an optional service.
fn warning_code(code: &'static str) -> &'static str {
    match code {
        "E_SERVICE_UNREACHABLE" => "W_SERVICE_UNREACHABLE",
        "E_SERVICE_UNHEALTHY" => "W_SERVICE_UNHEALTHY",
        "E_MIGRATIONS_MISMATCH" => "W_MIGRATIONS_MISMATCH",
        "E_MCP_TOOL_MISSING" => "W_MCP_TOOL_MISSING",
        other => other,
    }
}

async fn service(name: &str, s: &ServiceConfig, compiled: &Compiled) -> Outcome {
    let Some(url) = s.url.as_ref().map(|u| u.expose()) else {
        return Outcome {
            detail: "no URL: not asked".into(),
            problems: Vec::new(),
        };
    };
    let limit = s.connect_timeout.max(Duration::from_millis(500));
    match s.kind {
        ServiceKind::Sqlite | ServiceKind::Postgres => database(url, limit).await,
        ServiceKind::Redis => redis(compiled.redis.as_ref(), limit).await,
        ServiceKind::Openai => {
            let wanted: Vec<(usize, &str)> = compiled
                .config
                .agents
                .iter()
                .enumerate()
                .filter_map(|(i, a)| match &a.provider {
                    ProviderConfig::OpenAi { service, model, .. } if service == name => {
                        Some((i, model.as_str()))
                    }
                    _ => None,
                })
                .collect();
            let key = s
                .api_key
                .as_ref()
                .filter(|k| k.is_set())
                .map(|k| k.expose());
            web::models(url, key, limit, s.ca_file.as_deref(), &wanted).await
        }
        ServiceKind::Http => web::head(url, limit, s.ca_file.as_deref()).await,
    }
}

fn unreachable(e: impl std::fmt::Display, hint: &str) -> Outcome {
    Outcome {
        detail: format!("unreachable: {e}"),
        problems: vec![Problem::new(
            "E_SERVICE_UNREACHABLE",
            format!("did not answer: {e}"),
            hint,
        )],
    }
}

async fn database(url: &str, limit: Duration) -> Outcome {
    let status = match crate::store::migration_status(url, limit).await {
        Ok(s) => s,
        Err(e) => {
            return unreachable(
                e,
                "check that the database runs and accepts this URL's user, host and database name (the URL comes from the service's url or url_env)",
            );
        }
    };
    let detail = migrations_detail(&status);
    let mut problems = Vec::new();
    if !status.changed.is_empty() || !status.unknown.is_empty() {
        problems.push(Problem::new(
            "E_MIGRATIONS_MISMATCH",
            format!("the database's migrations do not match this binary (changed: {:?}, unknown: {:?})", status.changed, status.unknown),
            "serve would refuse to migrate: a newer (or different) portcullis migrated this database; deploy that version or use another database",
        ));
    } else if !status.pending.is_empty() && !status.new_file {
        // `serve` applies them at boot: a warning, whatever the service.
        problems.push(Problem {
            level: Level::Warning,
            ..Problem::new(
            "W_MIGRATIONS_PENDING",
            format!("migrations {:?} are not applied yet", status.pending),
            "serve applies them at boot (the database user needs DDL rights); run them ahead of a rolling deploy if old nodes share this database",
        )});
    }
    Outcome { detail, problems }
}

fn migrations_detail(s: &MigrationStatus) -> String {
    if s.new_file {
        return format!(
            "the file does not exist yet: serve creates it and applies {} migrations",
            s.pending.len()
        );
    }
    format!(
        "connected; {} migrations applied, {} pending",
        s.applied.len(),
        s.pending.len()
    )
}

async fn redis(pool: Option<&deadpool_redis::Pool>, limit: Duration) -> Outcome {
    let Some(pool) = pool else {
        return unreachable(
            "no Redis pool was built",
            "this is a bug: compile builds one per Redis service",
        );
    };
    let hint =
        "check that Redis runs and accepts this URL (host, port, password, TLS for rediss://)";
    match tokio::time::timeout(limit, crate::readiness::ping_redis(pool)).await {
        Ok(Ok(())) => Outcome {
            detail: "PONG".into(),
            problems: Vec::new(),
        },
        Ok(Err(e)) => unreachable(e, hint),
        Err(_) => unreachable(format!("no answer within {} ms", limit.as_millis()), hint),
    }
}

/// The remote JWT key source: `(key path, outcome, ms)`, or `None` for local keys.
async fn key_source(compiled: &Compiled) -> Option<(&'static str, Outcome, u64)> {
    use crate::auth::KeyCheckError;
    let verifier = compiled.verifier.as_ref()?;
    let key = match compiled.config.auth.jwt.as_ref().map(|j| &j.key) {
        Some(crate::config::KeySource::Remote(r)) => match r.location {
            crate::config::RemoteLocation::JwksUrl(_) => "auth.jwt.jwks_url",
            crate::config::RemoteLocation::OidcIssuer(_) => "auth.jwt.oidc_issuer",
        },
        _ => return None,
    };
    let started = Instant::now();
    let result = verifier.check_key_source().await?;
    let ms = started.elapsed().as_millis() as u64;
    let at = |p: Problem| Problem {
        path: Some(kp(key)),
        level: Level::Error,
        ..p
    };
    let outcome = match result {
        Ok(n) => Outcome {
            detail: format!("{n} usable keys"),
            problems: Vec::new(),
        },
        Err(KeyCheckError::Unreachable(e)) => Outcome {
            detail: format!("unreachable: {e}"),
            problems: vec![at(Problem::new(
                "E_SERVICE_UNREACHABLE",
                format!("the key source did not answer: {e}"),
                "check the URL, the identity provider, and auth.jwt.ca_file for a private CA; until it answers every token gets AUTH_UNAVAILABLE",
            ))],
        },
        Err(KeyCheckError::NoUsableKey(e)) => Outcome {
            detail: format!("no usable key: {e}"),
            problems: vec![at(Problem::new(
                "E_JWKS_NO_USABLE_KEY",
                format!("no usable key: {e}"),
                "the JWKS must hold a signing key of an algorithm in auth.jwt.algorithms (kty, alg, use = sig)",
            ))],
        },
    };
    Some((key, outcome, ms))
}
