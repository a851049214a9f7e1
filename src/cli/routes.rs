//! `portcullis routes`: the resolved route table of a valid environment.

use std::path::Path;
use std::process::ExitCode;

use crate::config::load::LoadOptions;
use crate::validate::check_env;

pub fn run(dir: &Path, env: &str) -> ExitCode {
    let outcome = check_env(&LoadOptions::from_process(dir), env);
    match outcome.config {
        Some(config) => {
            print!("{}", crate::http::table::render(&config));
            ExitCode::SUCCESS
        }
        None => {
            eprint!("{}", crate::report::human(&outcome.report));
            ExitCode::from(1)
        }
    }
}
