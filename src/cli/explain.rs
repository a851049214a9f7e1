//! `portcullis explain`: every effective value with its source, secrets redacted.

use std::path::Path;
use std::process::ExitCode;

use crate::config::load::LoadOptions;
use crate::validate::check_env;

pub fn run(dir: &Path, env: &str) -> ExitCode {
    let outcome = check_env(&LoadOptions::from_process(dir), env);
    match (&outcome.loaded, &outcome.raw) {
        (Some(loaded), Some(raw)) => {
            print!("{}", crate::config::explain::render(loaded, raw));
            if !outcome.report.is_ok() {
                eprint!("{}", crate::report::human(&outcome.report));
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("{}", crate::report::human(&outcome.report));
            ExitCode::from(1)
        }
    }
}
