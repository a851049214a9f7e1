//! `portcullis check`: exit 0 when clean, 1 on errors (or warnings with `--deny-warnings`).

use std::process::ExitCode;

use crate::compile::{Outcome, compile};
use crate::config::load::LoadOptions;
use crate::diagnostic::Report;
use crate::report::{self, Format};
use crate::validate::drift;

/// Checks every environment of the source plus the drift between them.
pub fn check_all(opts: &LoadOptions) -> Result<(Vec<Outcome>, Report), String> {
    let names = opts
        .environment_names()
        .map_err(|e| format!("cannot list {}: {e}", opts.source_name()))?;
    if names.is_empty() {
        return Err(format!("no environment files in {}", opts.source_name()));
    }
    let outcomes: Vec<Outcome> = names.iter().map(|n| compile(opts, n)).collect();
    let envs: Vec<drift::Env<'_>> = outcomes
        .iter()
        .filter_map(|o| Some((o.loaded.as_ref()?, o.raw.as_ref()?)))
        .collect();
    let mut drift_report = Report {
        env: "(drift between environments)".into(),
        ..Default::default()
    };
    drift_report.extend(drift::check(&envs));
    Ok((outcomes, drift_report))
}

pub fn run(
    opts: &LoadOptions,
    env: Option<&str>,
    all: bool,
    format: Format,
    deny_warnings: bool,
) -> ExitCode {
    let reports: Vec<Report> = if all {
        match check_all(opts) {
            Ok((outcomes, drift)) => outcomes
                .into_iter()
                .map(|o| o.report)
                .chain([drift])
                .collect(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        vec![compile(opts, env.unwrap_or("development")).report]
    };
    let ok = reports
        .iter()
        .all(|r| r.is_ok() && (!deny_warnings || r.warnings.is_empty()));
    match format {
        Format::Human => {
            for r in &reports {
                print!("{}", report::human(r));
            }
        }
        Format::Json => print!("{}", report::json(&reports, ok)),
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
