//! `portcullis serve`: compile first (the same gate as `check`); on any error print the
//! report and exit 78 without binding a port; otherwise serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use crate::compile::compile;
use crate::config::load::LoadOptions;

pub fn run(opts: &LoadOptions, env: &str) -> ExitCode {
    let outcome = compile(opts, env);
    let Some(compiled) = outcome.compiled else {
        eprint!("{}", crate::report::human(&outcome.report));
        eprintln!(
            "refusing to start: fix the errors above (exit {})",
            super::EXIT_CONFIG
        );
        return ExitCode::from(super::EXIT_CONFIG);
    };
    crate::telemetry::init(&compiled.config);
    if opts.uses_builtin() {
        tracing::info!(
            env = %env,
            "no ./environments directory: serving the built-in `{env}` environment (`portcullis init` writes the files for editing)"
        );
    }
    for w in &outcome.report.warnings {
        tracing::warn!(code = w.code, location = %w.location(), key = %w.key, "{}", w.message);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let env_name = compiled.config.name.clone();
        let server = match crate::server::start(compiled).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "startup failed");
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(addr = %server.addr, env = %env_name, "listening");
        crate::server::termination_signal().await;
        tracing::info!("shutdown requested; draining");
        server.shutdown();
        server.wait().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}
