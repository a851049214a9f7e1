//! The startup validator: checks a loaded environment against the JSON Schema and every
//! semantic rule and returns all problems at once, with the validated [`Config`] built
//! alongside (see `build.rs` for what it holds while errors remain). The compile step
//! (`crate::compile`) runs this, then builds every component, and is the one gate both
//! `check` and `serve` go through.

pub mod agents;
pub mod auth;
pub mod build;
pub mod components;
mod ctx;
pub mod deps;
pub mod drift;
pub mod endpoint;
mod models;
mod proxies;
pub mod routes;
mod schema_check;
pub mod schema_walk;
mod tls;
mod tolerant;
pub mod tools;

use crate::config::Config;
use crate::config::load::Loaded;
use crate::config::raw::RawConfig;
use crate::diagnostic::Finding;
use crate::keypath::KeyPath;

pub use tolerant::is_poisoned;

/// What the validator found in one loaded environment.
pub struct Validated {
    /// Schema and semantic findings, not yet placed in files.
    pub findings: Vec<Finding>,
    /// The raw configuration, when it could be read (despite type errors, which make
    /// their keys count as absent).
    pub raw: Option<RawConfig>,
    /// Paths the schema pass reported (and removed or replaced to read the rest); later
    /// findings about them would repeat what is already said.
    pub reported: Vec<KeyPath>,
    /// The configuration built from `raw`; servable only when `findings` has no error.
    pub config: Option<Config>,
}

/// Runs the schema pass and every semantic rule.
pub fn validate(loaded: &Loaded) -> Validated {
    let schema = schema_check::check(&loaded.merged);
    let mut findings = schema.findings;
    let bad: Vec<KeyPath> = findings
        .iter()
        .filter(|f| f.code != "E_UNKNOWN_KEY")
        .map(|f| f.path.clone())
        .collect();
    let (raw, reported) = tolerant::read(schema_check::schema(), schema.pruned, &bad);
    let mut config = None;
    if let Some(raw) = &raw {
        let mut cx = ctx::Ctx::new(raw, &loaded.env, &loaded.config_dir, loaded.no_env);
        endpoint::check(&mut cx);
        routes::check(&mut cx);
        auth::check(&mut cx);
        auth::check_dev_token(&mut cx);
        deps::check(&mut cx);
        components::check(&mut cx);
        tls::check(&mut cx);
        proxies::check(&mut cx);
        agents::check(&mut cx);
        models::check(&mut cx);
        tools::check(&mut cx);
        findings.extend(
            cx.findings
                .into_iter()
                .filter(|f| !tolerant::is_poisoned(&f.path, &reported)),
        );
        config = Some(build::build(raw, loaded));
    }
    Validated {
        findings,
        raw,
        reported,
        config,
    }
}

/// Orders diagnostics by file and position so reports (and snapshots) are stable.
pub fn sort(diags: &mut [crate::diagnostic::Diagnostic]) {
    diags.sort_by(|a, b| {
        (&a.file, a.line, a.col, a.code, &a.key, &a.message)
            .cmp(&(&b.file, b.line, b.col, b.code, &b.key, &b.message))
    });
}
