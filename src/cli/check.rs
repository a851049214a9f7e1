//! `portcullis check`: exit 0 when clean, 1 on errors (or warnings with `--deny-warnings`).

use std::path::Path;
use std::process::ExitCode;

use crate::config::load::{LoadOptions, environment_names};
use crate::diagnostic::Report;
use crate::report::{self, Format};
use crate::validate::{Outcome, check_env, drift};

/// Checks every environment in a directory plus the drift between them.
pub fn check_all(opts: &LoadOptions) -> Result<(Vec<Outcome>, Report), String> {
    let names = environment_names(&opts.config_dir)
        .map_err(|e| format!("cannot list {}: {e}", opts.config_dir.display()))?;
    if names.is_empty() {
        return Err(format!(
            "no environment files in {}",
            opts.config_dir.display()
        ));
    }
    let outcomes: Vec<Outcome> = names.iter().map(|n| check_env(opts, n)).collect();
    let mut drift_report = Report {
        env: "(drift between environments)".into(),
        ..Default::default()
    };
    drift_report.extend(drift::check(&outcomes));
    Ok((outcomes, drift_report))
}

pub fn run(
    dir: &Path,
    env: Option<&str>,
    all: bool,
    format: Format,
    deny_warnings: bool,
) -> ExitCode {
    let opts = LoadOptions::from_process(dir);
    let reports: Vec<Report> = if all {
        match check_all(&opts) {
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
        vec![check_env(&opts, env.unwrap_or("development")).report]
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
