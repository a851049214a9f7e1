//! `portcullis explain`: every effective value with its source, secrets redacted.

use std::process::ExitCode;

use crate::compile::compile;
use crate::config::load::LoadOptions;

pub fn run(opts: &LoadOptions, env: &str) -> ExitCode {
    let outcome = compile(opts, env);
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
