//! Cross-environment rules for `check --all`: differences between environments that make
//! a client or a test pass in one place and fail (or open a door) in another.

use crate::config::load::place;
use crate::config::raw::{EnvironmentKind, RawConfig};
use crate::diagnostic::{Diagnostic, Severity};
use crate::keypath::kp;

use crate::config::load::Loaded;

/// One environment as drift sees it: its files and its raw configuration.
pub type Env<'a> = (&'a Loaded, &'a RawConfig);

fn of_kind<'a>(envs: &[Env<'a>], kind: EnvironmentKind) -> Vec<Env<'a>> {
    envs.iter()
        .filter(|(_, r)| r.environment.kind == kind)
        .copied()
        .collect()
}

/// Compares environments; every finding is placed in the file of the environment it is about.
pub fn check(outcomes: &[Env<'_>]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let relaxed: Vec<Env<'_>> = [EnvironmentKind::Development, EnvironmentKind::Test]
        .into_iter()
        .flat_map(|k| of_kind(outcomes, k))
        .collect();
    let staging = of_kind(outcomes, EnvironmentKind::Staging);
    let production = of_kind(outcomes, EnvironmentKind::Production);

    for (o, s) in &staging {
        staging_only_bypass(&mut out, o, s, &relaxed);
        for (p, prod) in &production {
            token_sources(&mut out, p, s, prod);
            reject_at(&mut out, p, s, prod);
            algorithms(&mut out, p, s, prod);
            websocket_path(&mut out, p, s, prod);
        }
    }
    relaxed_origins(&mut out, &relaxed, &production);
    super::sort(&mut out);
    out
}

/// Records one finding placed in `l`'s files.
fn push(
    out: &mut Vec<Diagnostic>,
    l: &Loaded,
    code: &'static str,
    sev: Severity,
    path: &str,
    msg: String,
    hint: String,
) {
    out.push(place(l, code, sev, &kp(path), msg, hint));
}

/// `E_DRIFT_BYPASS`: refuses a staging bypass rule that no test environment declares, a
/// back door that CI never exercises.
fn staging_only_bypass(out: &mut Vec<Diagnostic>, o: &Loaded, s: &RawConfig, relaxed: &[Env<'_>]) {
    for (i, rule) in s.auth.bypass.iter().enumerate() {
        if !relaxed
            .iter()
            .any(|(_, r)| r.auth.bypass.iter().any(|b| b.name == rule.name))
        {
            push(
                out,
                o,
                "E_DRIFT_BYPASS",
                Severity::Error,
                &format!("auth.bypass[{i}].name"),
                format!(
                    "bypass rule `{}` exists only in staging: a back door no test environment exercises",
                    rule.name
                ),
                "declare the same rule in test (so CI uses it) or remove it from staging".into(),
            );
        }
    }
}

/// `E_DRIFT_TOKEN_SOURCES`: refuses a token source staging accepts but production does
/// not (the query string excepted), since clients working in staging would be refused.
fn token_sources(out: &mut Vec<Diagnostic>, p: &Loaded, s: &RawConfig, prod: &RawConfig) {
    for src in &s.auth.token_sources {
        if !prod.auth.token_sources.contains(src) && *src != crate::config::raw::TokenSource::Query
        {
            push(
                out,
                p,
                "E_DRIFT_TOKEN_SOURCES",
                Severity::Error,
                "auth.token_sources",
                format!(
                    "staging accepts tokens from `{}` but production does not: clients that work in staging get refused in production",
                    src.as_str()
                ),
                format!(
                    "add \"{}\" to production's auth.token_sources or remove it from staging",
                    src.as_str()
                ),
            );
        }
    }
}

/// `W_DRIFT_REJECT_AT`: warns when staging and production refuse bad tokens at different
/// points, so clients see different failures.
fn reject_at(out: &mut Vec<Diagnostic>, p: &Loaded, s: &RawConfig, prod: &RawConfig) {
    if s.auth.reject_at != prod.auth.reject_at {
        push(out, p, "W_DRIFT_REJECT_AT", Severity::Warning, "auth.reject_at",
            "staging and production refuse bad tokens at different points: clients see different failures".into(),
            "use the same auth.reject_at in both".into());
    }
}

/// `W_DRIFT_ALGORITHMS`: warns when staging verifies other JWT algorithm families than
/// production, so staging does not test production's key path.
fn algorithms(out: &mut Vec<Diagnostic>, p: &Loaded, s: &RawConfig, prod: &RawConfig) {
    let fams = |r: &RawConfig| {
        r.auth
            .jwt
            .as_ref()
            .map(|j| {
                j.algorithms
                    .iter()
                    .filter_map(|a| super::auth::family(a))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    if fams(s) != fams(prod) {
        push(out, p, "W_DRIFT_ALGORITHMS", Severity::Warning, "auth.jwt.algorithms",
            "staging and production verify different JWT algorithm families: staging does not test production's key path".into(),
            "use the same algorithm family in staging".into());
    }
}

/// `E_DRIFT_WS_PATH`: refuses a staging client path that production does not serve.
fn websocket_path(out: &mut Vec<Diagnostic>, p: &Loaded, s: &RawConfig, prod: &RawConfig) {
    let ws_paths = |r: &RawConfig| {
        std::iter::once(r.websocket.path.clone())
            .chain(r.websocket.aliases.clone())
            .collect::<Vec<_>>()
    };
    let stage_path = super::endpoint::split_url(&s.client.websocket_url)
        .map(|(_, _, p)| p.to_string())
        .unwrap_or_default();
    if !ws_paths(prod).contains(&stage_path) {
        push(
            out,
            p,
            "E_DRIFT_WS_PATH",
            Severity::Error,
            "websocket.path",
            format!("staging clients dial `{stage_path}`, which production does not serve"),
            format!(
                "add `{stage_path}` to production's websocket.aliases or use one path everywhere"
            ),
        );
    }
}

/// `W_DRIFT_ORIGINS`: warns when a development or test environment allows any Origin
/// while production pins origins, so Origin bugs show up only after deploy.
fn relaxed_origins(out: &mut Vec<Diagnostic>, relaxed: &[Env<'_>], production: &[Env<'_>]) {
    if production.iter().any(|(_, p)| {
        !p.websocket.allowed_origins.is_empty()
            && !p.websocket.allowed_origins.iter().any(|o| o == "*")
    }) {
        for (o, r) in relaxed {
            if r.websocket.allowed_origins.iter().any(|x| x == "*") {
                push(
                    out,
                    o,
                    "W_DRIFT_ORIGINS",
                    Severity::Warning,
                    "websocket.allowed_origins",
                    format!(
                        "`{}` allows any Origin while production pins origins: Origin bugs show up only after deploy",
                        r.environment.name
                    ),
                    "list the development origins explicitly (e.g. \"http://localhost:8080\")"
                        .into(),
                );
            }
        }
    }
}
