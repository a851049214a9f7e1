//! `portcullis token`: mints a token with an environment's key, for scripts and manual
//! testing. Refused for production, whose tokens come from the real identity provider.

use std::process::ExitCode;
use std::time::Duration;

use crate::compile::compile;
use crate::config::EnvironmentKind;
use crate::config::load::LoadOptions;

pub fn run(opts: &LoadOptions, env: &str, sub: &str, ttl: Duration) -> ExitCode {
    let outcome = compile(opts, env);
    let Some(config) = outcome.config() else {
        eprint!("{}", crate::report::human(&outcome.report));
        return ExitCode::from(1);
    };
    if config.kind == EnvironmentKind::Production {
        eprintln!(
            "error[E_TOKEN_PRODUCTION]: refusing to mint a token for production; production tokens come from your identity provider"
        );
        return ExitCode::from(1);
    }
    let Some(jwt) = &config.auth.jwt else {
        eprintln!(
            "error[E_TOKEN_NO_JWT]: environment `{env}` has auth.mode = \"none\"; it needs no token"
        );
        return ExitCode::from(1);
    };
    match crate::auth::mint_for_config(jwt, sub, ttl, chrono::Utc::now()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error[E_TOKEN_MINT]: {e}; minting needs an HMAC secret (auth.jwt.secret_env)"
            );
            ExitCode::from(1)
        }
    }
}
