//! `portcullis check`: exit 0 when clean, 1 on errors (or warnings with `--deny-warnings`).
//! With `--online`, every environment that passes the offline checks then has its
//! services asked (`crate::online`), and their findings join its report.

use std::process::ExitCode;

use crate::compile::{Outcome, compile};
use crate::config::load::{LoadOptions, place};
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

/// `check`'s switches.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// Check every environment and the drift between them.
    pub all: bool,
    /// Output format.
    pub format: Format,
    /// Fail on warnings too.
    pub deny_warnings: bool,
    /// Connect to every declared service after the offline checks.
    pub online: bool,
}

pub fn run(opts: &LoadOptions, env: Option<&str>, flags: Flags) -> ExitCode {
    let (outcomes, drift) = if flags.all {
        match check_all(opts) {
            Ok((outcomes, drift)) => (outcomes, Some(drift)),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        (vec![compile(opts, env.unwrap_or("development"))], None)
    };
    let mut reports: Vec<Report> = outcomes.iter().map(|o| o.report.clone()).collect();
    if flags.online {
        if let Err(e) = online(&outcomes, &mut reports) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    reports.extend(drift);
    let ok = reports
        .iter()
        .all(|r| r.is_ok() && (!flags.deny_warnings || r.warnings.is_empty()));
    match flags.format {
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

/// Asks the services of every environment that compiled; their findings are placed at
/// the services' `file:line` and join the report.
fn online(outcomes: &[Outcome], reports: &mut [Report]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    for (outcome, report) in outcomes.iter().zip(reports.iter_mut()) {
        let (Some(compiled), Some(loaded)) = (&outcome.compiled, &outcome.loaded) else {
            continue;
        };
        let found = runtime.block_on(crate::online::check(compiled));
        let mut diags: Vec<_> = found
            .findings
            .into_iter()
            .map(|f| place(loaded, f.code, f.severity, &f.path, f.message, f.hint))
            .collect();
        crate::validate::sort(&mut diags);
        report.extend(diags);
        report.online = found.checks;
    }
    Ok(())
}
