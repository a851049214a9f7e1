//! `portcullis routes`: the resolved route table of a valid environment.

use std::process::ExitCode;

use crate::compile::compile;
use crate::config::load::LoadOptions;

pub fn run(opts: &LoadOptions, env: &str) -> ExitCode {
    let outcome = compile(opts, env);
    match outcome.config() {
        Some(config) => {
            print!("{}", crate::http::table::render(config));
            ExitCode::SUCCESS
        }
        None => {
            eprint!("{}", crate::report::human(&outcome.report));
            ExitCode::from(1)
        }
    }
}
