//! `PORTCULLIS_<TABLE>__<KEY>` overrides: they change the value, and `explain` and the
//! validator's reports name the variable as the value's source.

use portcullis::compile::compile as check_env;
use portcullis::config::explain;
use portcullis::report::human;

use super::*;

fn with(extra: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    let mut env = fake_env();
    env.extend(vars(extra));
    env
}

#[test]
fn override_changes_the_value_and_explain_names_the_variable() {
    let env = with(&[
        ("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:9911"),
        ("PORTCULLIS_WEBSOCKET__HEARTBEAT_MS", "15000"),
    ]);
    let o = check_env(&opts("environments", env), "test");
    let config = o.config().unwrap_or_else(|| panic!("{}", human(&o.report)));
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:9911");
    assert_eq!(config.websocket.heartbeat.as_millis(), 15000);
    let text = explain::render(o.loaded.as_ref().unwrap(), o.raw.as_ref().unwrap());
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("server.listen"),
        "server.listen = \"127.0.0.1:9911\" # env PORTCULLIS_SERVER__LISTEN"
    );
    assert_eq!(
        line("websocket.heartbeat_ms"),
        "websocket.heartbeat_ms = 15000 # env PORTCULLIS_WEBSOCKET__HEARTBEAT_MS"
    );
    // A value not overridden still points at its file.
    assert_eq!(
        line("websocket.path"),
        "websocket.path = \"/websocket\" # environments/base.toml:15:1"
    );
}

#[test]
fn a_bad_override_is_reported_at_its_variable() {
    let env = with(&[("PORTCULLIS_WEBSOCKET__HEARTBEAT_MS", "90000")]);
    let r = check_env(&opts("environments", env), "test").report;
    let got: Vec<String> = r
        .errors
        .iter()
        .map(|d| format!("{} {} {}", d.code, d.location(), d.key))
        .collect();
    assert_eq!(
        got,
        ["E_HEARTBEAT_TIMEOUT env PORTCULLIS_WEBSOCKET__HEARTBEAT_MS websocket.heartbeat_ms"]
    );
    snapshot("override_heartbeat", &human(&r));
}

#[test]
fn a_misspelled_override_is_an_unknown_key_at_its_variable() {
    let env = with(&[("PORTCULLIS_SERVER__LISTN", "127.0.0.1:9911")]);
    let r = check_env(&opts("environments", env), "test").report;
    let got: Vec<String> = r
        .errors
        .iter()
        .map(|d| format!("{} {} {} | {}", d.code, d.location(), d.key, d.hint))
        .collect();
    assert_eq!(
        got,
        ["E_UNKNOWN_KEY env PORTCULLIS_SERVER__LISTN server.listn | did you mean `listen`?"]
    );
}

/// Development follows its own address: moving the port (or the public URL) keeps the
/// console's own origin allowed instead of a silent 403 `ORIGIN_NOT_ALLOWED`.
#[test]
fn development_allows_the_origin_it_is_served_from() {
    let env = with(&[
        ("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:9911"),
        ("PORTCULLIS_SERVER__PUBLIC_URL", "http://dev.local:9911"),
    ]);
    let o = check_env(&opts("environments", env), "development");
    let config = o.config().unwrap_or_else(|| panic!("{}", human(&o.report)));
    let origins = &config.websocket.allowed_origins;
    for own in [
        "http://dev.local:9911",
        "http://127.0.0.1:9911",
        "http://localhost:9911",
        "http://localhost:8080",
    ] {
        assert!(origins.iter().any(|o| o == own), "{own} in {origins:?}");
    }
    // Elsewhere the list is exactly what the file says.
    let env = with(&[("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:9911")]);
    let o = check_env(&opts("environments", env), "test");
    let origins = &o.config().unwrap().websocket.allowed_origins;
    assert!(!origins.iter().any(|o| o.ends_with(":9911")), "{origins:?}");
}
