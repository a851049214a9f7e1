//! The startup validator: loads an environment, checks it against the JSON Schema and every
//! semantic rule, and returns all problems at once — or the validated [`Config`].

mod agents;
pub mod auth;
mod build;
mod ctx;
pub mod deps;
pub mod drift;
pub mod endpoint;
mod proxies;
pub mod routes;
mod schema_check;
pub mod schema_walk;
mod tls;

use crate::config::Config;
use crate::config::load::{LoadOptions, Loaded, load, place};
use crate::config::raw::RawConfig;
use crate::diagnostic::{Diagnostic, Report, Severity};

/// The result of checking one environment.
pub struct Outcome {
    /// Every error and warning.
    pub report: Report,
    /// Present only when there are no errors.
    pub config: Option<Config>,
    /// The loaded files (absent when loading itself failed).
    pub loaded: Option<Loaded>,
    /// The raw configuration, when it could be read.
    pub raw: Option<RawConfig>,
}

/// Checks one environment.
pub fn check_env(opts: &LoadOptions, env: &str) -> Outcome {
    let mut report = Report {
        env: env.to_string(),
        ..Default::default()
    };
    let loaded = match load(opts, env) {
        Ok(l) => l,
        Err(diags) => {
            report.extend(diags);
            return Outcome {
                report,
                config: None,
                loaded: None,
                raw: None,
            };
        }
    };
    let schema = schema_check::check(&loaded.merged);
    let mut findings = schema.findings;
    let raw: Option<RawConfig> = serde_json::from_value(schema.pruned).ok();
    if let Some(raw) = &raw {
        let mut cx = ctx::Ctx::new(raw, &loaded.env, &loaded.config_dir);
        endpoint::check(&mut cx);
        routes::check(&mut cx);
        auth::check(&mut cx);
        auth::check_dev_token(&mut cx);
        deps::check(&mut cx);
        tls::check(&mut cx);
        proxies::check(&mut cx);
        agents::check(&mut cx);
        findings.extend(cx.findings);
    }
    let mut diags: Vec<Diagnostic> = findings
        .into_iter()
        .map(|f| place(&loaded, f.code, f.severity, &f.path, f.message, f.hint))
        .collect();
    sort(&mut diags);
    report.extend(diags);
    let config = match (&raw, report.is_ok()) {
        (Some(r), true) => match build::build(r, &loaded.env, &loaded.config_dir) {
            Ok(c) => Some(c),
            Err(e) => {
                report.errors.push(Diagnostic {
                    code: "E_INTERNAL",
                    severity: Severity::Error,
                    file: loaded.files[0].display.clone(),
                    line: None,
                    col: None,
                    key: "(config)".into(),
                    message: format!("validated configuration could not be built: {e}"),
                    hint: "this is a portcullis bug; please report it with this file".into(),
                });
                None
            }
        },
        _ => None,
    };
    Outcome {
        report,
        config,
        loaded: Some(loaded),
        raw,
    }
}

/// Orders diagnostics by file and position so reports (and snapshots) are stable.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (&a.file, a.line, a.col, a.code, &a.key, &a.message)
            .cmp(&(&b.file, b.line, b.col, b.code, &b.key, &b.message))
    });
}
