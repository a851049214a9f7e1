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

#[test]
fn staging_clients_dial_a_path_production_does_not_serve() {
    let r = drift("tests/fixtures/drift/ws_path");
    assert_eq!(
        located(&r),
        ["E_DRIFT_WS_PATH tests/fixtures/drift/ws_path/production.toml:15:1 websocket.path"]
    );
    snapshot("drift_ws_path", &human(&r));
}

/// Every drift code the validator can emit has a fixture set named after it.
#[test]
fn every_drift_error_code_has_a_fixture() {
    let text = std::fs::read_to_string("src/validate/drift.rs").unwrap();
    let codes: Vec<&str> = text
        .split('"')
        .filter(|s| s.starts_with("E_DRIFT_"))
        .collect();
    assert!(!codes.is_empty());
    for code in codes {
        let dir = format!(
            "tests/fixtures/drift/{}",
            code.trim_start_matches("E_DRIFT_").to_lowercase()
        );
        assert!(
            std::path::Path::new(&dir).is_dir(),
            "{code} has no fixture {dir}"
        );
    }
}
