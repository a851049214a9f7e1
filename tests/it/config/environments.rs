//! The shipped environments in `environments/`: `explain` and `routes` pinned for each
//! (with fake secrets), secret values never printed, and `check --all` clean.

use portcullis::cli::check::check_all;
use portcullis::compile::{Outcome, compile as check_env};
use portcullis::config::explain;
use portcullis::http::table;
use portcullis::report::human;

use super::*;

const ENVIRONMENTS: [&str; 4] = ["development", "test", "staging", "production"];

fn shipped(env: &str) -> Outcome {
    check_env(&opts("environments", fake_env()), env)
}

fn explain_text(o: &Outcome) -> String {
    explain::render(o.loaded.as_ref().unwrap(), o.raw.as_ref().unwrap())
}

fn routes_text(o: &Outcome) -> String {
    let config = o.config().unwrap_or_else(|| panic!("{}", human(&o.report)));
    table::render(config)
}

fn explain_and_routes(env: &str) {
    let o = shipped(env);
    snapshot(&format!("explain_{env}"), &explain_text(&o));
    snapshot(&format!("routes_{env}"), &routes_text(&o));
}

#[test]
fn explain_and_routes_of_development() {
    explain_and_routes("development");
}

#[test]
fn explain_and_routes_of_test() {
    explain_and_routes("test");
}

#[test]
fn explain_and_routes_of_staging() {
    explain_and_routes("staging");
}

#[test]
fn explain_and_routes_of_production() {
    explain_and_routes("production");
}

/// Every secret a shipped environment can hold: the fake variables, and the inline
/// secrets development and test are allowed to write in their files.
fn secret_values(outcomes: &[Outcome]) -> Vec<String> {
    let mut secrets: Vec<String> = [
        FAKE_JWT_SECRET,
        FAKE_BYPASS_SECRET,
        FAKE_DATABASE_URL,
        FAKE_DATABASE_PASSWORD,
        FAKE_REDIS_URL,
        FAKE_REDIS_PASSWORD,
        FAKE_MODEL_API_KEY,
    ]
    .map(String::from)
    .to_vec();
    for o in outcomes {
        let raw = o.raw.as_ref().unwrap();
        secrets.extend(raw.auth.jwt.iter().filter_map(|j| j.secret.clone()));
        secrets.extend(raw.auth.bypass.iter().filter_map(|b| b.secret.clone()));
    }
    secrets
}

#[test]
fn secret_values_never_appear_in_explain_routes_or_reports() {
    let outcomes: Vec<Outcome> = ENVIRONMENTS.iter().map(|e| shipped(e)).collect();
    let secrets = secret_values(&outcomes);
    // Inline secrets of development and test are part of the check, not just the fakes.
    assert!(secrets.len() > 7, "{secrets:?}");
    for o in &outcomes {
        let outputs = [
            ("explain", explain_text(o)),
            ("routes", routes_text(o)),
            ("report", human(&o.report)),
            ("debug", format!("{:?}", o.config())),
        ];
        for (what, text) in outputs {
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "{what} of {} shows a secret value:\n{text}",
                    o.report.env
                );
            }
        }
    }
    // The redaction is visible, and `*_env` keys say whether they are set.
    let prod = explain_text(&outcomes[3]);
    assert!(prod.contains("secret_env = \"PORTCULLIS_JWT_SECRET\" (set, 46 bytes)"));
    assert!(explain_text(&outcomes[1]).contains("auth.jwt.secret = \"[redacted]\""));
}

#[test]
fn explain_says_which_variables_are_not_set() {
    let o = check_env(&opts("environments", vars(&[])), "production");
    let text = explain_text(&o);
    assert!(
        text.contains("\"PORTCULLIS_JWT_SECRET\" (NOT SET)"),
        "{text}"
    );
    assert!(
        text.contains("\"PORTCULLIS_DATABASE_URL\" (NOT SET)"),
        "{text}"
    );
}

#[test]
fn check_all_of_the_shipped_environments_is_clean() {
    let (outcomes, drift) = check_all(&opts("environments", fake_env())).unwrap();
    let names: Vec<&str> = outcomes.iter().map(|o| o.report.env.as_str()).collect();
    assert_eq!(names, ["development", "production", "staging", "test"]);
    let mut text = String::new();
    for o in &outcomes {
        assert!(o.report.is_ok(), "{}", human(&o.report));
        assert!(o.config().is_some());
        text.push_str(&human(&o.report));
    }
    assert!(drift.is_ok(), "{}", human(&drift));
    text.push_str(&human(&drift));
    snapshot("check_all_environments", &text);
}
