//! `check --all` drift between environments, on fixture directories whose files are
//! each valid alone (`tests/fixtures/drift/`).

use portcullis::cli::check::check_all;
use portcullis::diagnostic::Report;
use portcullis::report::human;

use super::*;

fn drift(dir: &str) -> Report {
    let (outcomes, drift) = check_all(&opts(dir, fake_env())).unwrap();
    for o in &outcomes {
        assert!(
            o.report.is_ok(),
            "each file must be valid alone:\n{}",
            human(&o.report)
        );
    }
    drift
}

fn located(r: &Report) -> Vec<String> {
    r.errors
        .iter()
        .map(|d| format!("{} {} {}", d.code, d.location(), d.key))
        .collect()
}

#[test]
fn bypass_rule_only_in_staging() {
    let r = drift("tests/fixtures/drift/bypass");
    assert_eq!(
        located(&r),
        ["E_DRIFT_BYPASS tests/fixtures/drift/bypass/staging.toml:28:1 auth.bypass[0].name"]
    );
    snapshot("drift_bypass", &human(&r));
}

#[test]
fn token_source_accepted_in_staging_only() {
    let r = drift("tests/fixtures/drift/token_sources");
    assert_eq!(
        located(&r),
        [
            "E_DRIFT_TOKEN_SOURCES tests/fixtures/drift/token_sources/production.toml:20:1 auth.token_sources"
        ]
    );
    assert!(r.errors[0].hint.contains("\"first_message\""));
    snapshot("drift_token_sources", &human(&r));
}
