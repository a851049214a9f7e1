//! One fixture per validator rule (`tests/fixtures/invalid/<rule>/`): the exact list of
//! error codes, the `file:line` and key of the one the fixture is about, and the whole
//! human report pinned as `snapshots/invalid_<rule>.snap`.

use std::collections::{BTreeMap, BTreeSet};

use portcullis::compile::compile as check_env;
use portcullis::diagnostic::{Diagnostic, Report};
use portcullis::report::human;

use super::{fake_env, opts, snapshot};

/// The checked fixture `tests/fixtures/invalid/<rule>/<env>.toml`.
struct Fixture {
    rule: &'static str,
    env: &'static str,
    report: Report,
}

/// Checks a fixture with no environment variables set.
fn invalid(rule: &'static str, env: &'static str) -> Fixture {
    invalid_with(rule, env, BTreeMap::new())
}

/// Checks a fixture with the given environment variables (and only those).
fn invalid_with(rule: &'static str, env: &'static str, vars: BTreeMap<String, String>) -> Fixture {
    let dir = format!("tests/fixtures/invalid/{rule}");
    let report = check_env(&opts(&dir, vars), env).report;
    Fixture { rule, env, report }
}

impl Fixture {
    fn codes(&self) -> Vec<&'static str> {
        self.report.errors.iter().map(|d| d.code).collect()
    }

    /// Asserts the whole list of errors, in report order.
    fn errors(&self, want: &[&str]) -> &Self {
        assert_eq!(
            self.codes(),
            want,
            "{}/{}:\n{}",
            self.rule,
            self.env,
            human(&self.report)
        );
        self
    }

    fn first(&self, code: &str) -> &Diagnostic {
        self.report
            .errors
            .iter()
            .find(|d| d.code == code)
            .unwrap_or_else(|| panic!("no {code} in\n{}", human(&self.report)))
    }

    /// Asserts where the first `code` error is: `file:line` (file relative to the
    /// fixture directory) and key path.
    fn at(&self, code: &str, file_line: &str, key: &str) -> &Self {
        let d = self.first(code);
        let line = d.line.map(|l| l.to_string()).unwrap_or_default();
        assert_eq!(
            (format!("{}:{line}", d.file), d.key.as_str()),
            (
                format!("tests/fixtures/invalid/{}/{file_line}", self.rule),
                key
            ),
            "{}",
            human(&self.report)
        );
        self
    }

    /// Asserts a text in the first `code` error's message or hint.
    fn says(&self, code: &str, text: &str) -> &Self {
        let d = self.first(code);
        assert!(
            d.message.contains(text) || d.hint.contains(text),
            "{code} does not say {text:?}:\n{}",
            human(&self.report)
        );
        self
    }

    /// Pins the whole human report.
    fn snapshot(&self) {
        snapshot(&format!("invalid_{}", self.rule), &human(&self.report));
    }
}

// ---- the failures the design names ----

#[test]
fn scope_process_component_needing_user_context() {
    invalid("scope", "test")
        .errors(&["E_SCOPE"])
        .at(
            "E_SCOPE",
            "test.toml:64",
            "components.rate_limiter.needs[0]",
        )
        .says("E_SCOPE", "rate_limiter")
        .says("E_SCOPE", "user_context")
        .snapshot();
}

#[test]
fn scope_process_component_needing_connection_component() {
    invalid("scope_narrower", "test")
        .errors(&["E_SCOPE"])
        .at("E_SCOPE", "test.toml:60", "components.metrics.needs[0]")
        .says("E_SCOPE", "`metrics` needs `session`")
        .snapshot();
}

#[test]
fn scope_error_in_the_extended_base_file_points_into_the_base() {
    invalid("scope_in_base", "test")
        .errors(&["E_SCOPE"])
        .at(
            "E_SCOPE",
            "base.toml:29",
            "components.rate_limiter.needs[0]",
        )
        .snapshot();
}

#[test]
fn client_dials_ws_while_socket_is_websocket() {
    invalid("client_ws_url", "test")
        .errors(&["E_CLIENT_WS_URL"])
        .at("E_CLIENT_WS_URL", "test.toml:44", "client.websocket_url")
        .says("E_CLIENT_WS_URL", "declared WebSocket path (/websocket)")
        .snapshot();
}

#[test]
fn websocket_path_declared_as_http_get_route() {
    invalid("ws_route_conflict", "test")
        .errors(&["E_WS_ROUTE_CONFLICT"])
        .at("E_WS_ROUTE_CONFLICT", "test.toml:41", "routes[2].path")
        .snapshot();
}

#[test]
fn bypass_rule_in_production() {
    invalid_with("bypass_in_production", "production", fake_env())
        .errors(&["E_BYPASS_IN_PRODUCTION"])
        .at(
            "E_BYPASS_IN_PRODUCTION",
            "production.toml:28",
            "auth.bypass[0].name",
        )
        .snapshot();
}

#[test]
fn auth_none_in_production() {
    invalid_with("auth_none_in_production", "production", fake_env())
        .errors(&["E_AUTH_NONE_IN_PRODUCTION"])
        .at(
            "E_AUTH_NONE_IN_PRODUCTION",
            "production.toml:18",
            "auth.mode",
        )
        .snapshot();
}

#[test]
fn query_token_source_in_production() {
    invalid_with("query_token_in_production", "production", fake_env())
        .errors(&["E_QUERY_TOKEN_IN_PRODUCTION"])
        .at(
            "E_QUERY_TOKEN_IN_PRODUCTION",
            "production.toml:19",
            "auth.token_sources[2]",
        )
        .snapshot();
}

#[test]
fn inline_jwt_secret_in_production() {
    invalid_with("inline_secret", "production", fake_env())
        .errors(&["E_INLINE_SECRET"])
        .at("E_INLINE_SECRET", "production.toml:22", "auth.jwt.secret")
        .snapshot();
}

#[test]
fn password_inline_in_a_production_service_url() {
    invalid_with("inline_secret_url", "production", fake_env())
        .errors(&["E_INLINE_SECRET"])
        .at(
            "E_INLINE_SECRET",
            "production.toml:29",
            "services.database.url",
        )
        .snapshot();
}

#[test]
fn bypass_in_staging_without_secret_env() {
    invalid_with("bypass_no_secret_env", "staging", fake_env())
        .errors(&["E_BYPASS_NO_SECRET_ENV"])
        .at(
            "E_BYPASS_NO_SECRET_ENV",
            "staging.toml:27",
            "auth.bypass[0]",
        )
        .snapshot();
}

#[test]
fn algorithm_none() {
    invalid("jwt_alg_none", "test")
        .errors(&["E_JWT_ALG_NONE"])
        .at("E_JWT_ALG_NONE", "test.toml:21", "auth.jwt.algorithms[1]")
        .snapshot();
}

#[test]
fn algorithms_mixing_hmac_and_rsa() {
    invalid("jwt_alg_mixed", "test")
        .errors(&["E_JWT_ALG_MIXED"])
        .at("E_JWT_ALG_MIXED", "test.toml:21", "auth.jwt.algorithms")
        .says("E_JWT_ALG_MIXED", "HMAC and RSA")
        .snapshot();
}

#[test]
fn short_inline_hmac_secret_in_test() {
    invalid("jwt_secret_short", "test")
        .errors(&["E_JWT_SECRET_SHORT"])
        .at("E_JWT_SECRET_SHORT", "test.toml:22", "auth.jwt.secret")
        .says("E_JWT_SECRET_SHORT", "16 bytes")
        .snapshot();
}

#[test]
fn short_hmac_secret_from_the_environment_in_staging() {
    let mut env = fake_env();
    env.insert("PORTCULLIS_JWT_SECRET".into(), "short-secret".into());
    invalid_with("jwt_secret_short_staging", "staging", env)
        .errors(&["E_JWT_SECRET_SHORT"])
        .at(
            "E_JWT_SECRET_SHORT",
            "staging.toml:22",
            "auth.jwt.secret_env",
        )
        .says("E_JWT_SECRET_SHORT", "12 bytes")
        .snapshot();
}

#[test]
fn missing_issuer_in_staging() {
    invalid_with("jwt_no_issuer", "staging", fake_env())
        .errors(&["E_JWT_NO_ISSUER"])
        .at("E_JWT_NO_ISSUER", "staging.toml:20", "auth.jwt")
        .snapshot();
}

#[test]
fn missing_audience_in_staging() {
    invalid_with("jwt_no_audience", "staging", fake_env())
        .errors(&["E_JWT_NO_AUDIENCE"])
        .at("E_JWT_NO_AUDIENCE", "staging.toml:20", "auth.jwt")
        .snapshot();
}

#[test]
fn every_unset_env_variable_is_named_in_one_report() {
    let f = invalid("env_missing", "production");
    f.errors(&["E_ENV_MISSING", "E_ENV_MISSING", "E_ENV_MISSING"])
        .at("E_ENV_MISSING", "production.toml:23", "auth.jwt.secret_env");
    let places: Vec<String> = f
        .report
        .errors
        .iter()
        .map(|d| format!("{} {}", d.location(), d.key))
        .collect();
    let dir = "tests/fixtures/invalid/env_missing/production.toml";
    assert_eq!(
        places,
        [
            format!("{dir}:23:1 auth.jwt.secret_env"),
            format!("{dir}:29:1 services.database.url_env"),
            format!("{dir}:57:1 services.redis.url_env"),
        ]
    );
    for var in [
        "PORTCULLIS_JWT_SECRET",
        "PORTCULLIS_DATABASE_URL",
        "PORTCULLIS_REDIS_URL",
    ] {
        assert!(
            f.report.errors.iter().any(|d| d.message.contains(var)),
            "{var} not named"
        );
    }
    f.snapshot();
}

#[test]
fn duplicate_method_and_path() {
    invalid("route_conflict", "test")
        .errors(&["E_ROUTE_CONFLICT"])
        .at("E_ROUTE_CONFLICT", "test.toml:41", "routes[2].path")
        .says("E_ROUTE_CONFLICT", "routes[0]")
        .snapshot();
}

#[test]
fn ambiguous_parameter_routes() {
    invalid("route_ambiguous", "test")
        .errors(&["E_ROUTE_AMBIGUOUS"])
        .at("E_ROUTE_AMBIGUOUS", "test.toml:46", "routes[3].path")
        .snapshot();
}

#[test]
fn unknown_handler() {
    invalid("unknown_handler", "test")
        .errors(&["E_UNKNOWN_HANDLER"])
        .at("E_UNKNOWN_HANDLER", "test.toml:41", "routes[2].handler")
        .says("E_UNKNOWN_HANDLER", "did you mean `client_config`?")
        .snapshot();
}

#[test]
fn unknown_name_in_needs() {
    invalid("unknown_dependency", "test")
        .errors(&["E_UNKNOWN_DEPENDENCY"])
        .at(
            "E_UNKNOWN_DEPENDENCY",
            "test.toml:43",
            "components.store.needs[0]",
        )
        .says("E_UNKNOWN_DEPENDENCY", "did you mean `database`?")
        .snapshot();
}

#[test]
fn dependency_cycle() {
    invalid("dependency_cycle", "test")
        .errors(&["E_DEPENDENCY_CYCLE"])
        .at("E_DEPENDENCY_CYCLE", "test.toml:32", "services.model.needs")
        .says("E_DEPENDENCY_CYCLE", "model -> token_service -> model")
        .snapshot();
}

#[test]
fn heartbeat_not_below_proxy_idle_timeout() {
    invalid("heartbeat_timeout", "test")
        .errors(&["E_HEARTBEAT_TIMEOUT"])
        .at(
            "E_HEARTBEAT_TIMEOUT",
            "test.toml:18",
            "websocket.heartbeat_ms",
        )
        .snapshot();
}

#[test]
fn misspelled_key_with_closest_valid_key() {
    invalid("unknown_key", "test")
        .errors(&["E_UNKNOWN_KEY"])
        .at("E_UNKNOWN_KEY", "test.toml:16", "websocket.hearbeat_ms")
        .says("E_UNKNOWN_KEY", "did you mean `heartbeat_ms`?")
        .snapshot();
}

// ---- schema ----

/// Schema errors inside an optional table (`[auth.jwt]` is `anyOf: [JwtSection, null]`)
/// are reported at the key, not as one opaque error about the whole table.
#[test]
fn misspelled_key_inside_an_optional_table() {
    invalid("unknown_key_jwt", "test")
        .errors(&["E_UNKNOWN_KEY"])
        .at("E_UNKNOWN_KEY", "test.toml:24", "auth.jwt.isuer")
        .says("E_UNKNOWN_KEY", "did you mean `issuer`?")
        .snapshot();
}

#[test]
fn wrong_type_inside_an_optional_table() {
    invalid("type_jwt", "test")
        .errors(&["E_TYPE"])
        .at("E_TYPE", "test.toml:21", "auth.jwt.algorithms")
        .says("E_TYPE", "expected array")
        .snapshot();
}

#[test]
fn missing_required_key() {
    invalid("missing_key", "test")
        .errors(&["E_MISSING_KEY"])
        .at("E_MISSING_KEY", "test.toml:8", "server.public_url")
        .snapshot();
}

#[test]
fn wrong_type() {
    invalid("type", "test")
        .errors(&["E_TYPE"])
        .at("E_TYPE", "test.toml:11", "server.max_connections")
        .snapshot();
}

#[test]
fn out_of_range() {
    invalid("range", "test")
        .errors(&["E_RANGE"])
        .at("E_RANGE", "test.toml:16", "websocket.max_message_bytes")
        .says("E_RANGE", "256 to 16777216")
        .snapshot();
}

#[test]
fn send_queue_limits_out_of_range() {
    invalid("send_queue_range", "test")
        .errors(&["E_RANGE", "E_RANGE"])
        .at("E_RANGE", "test.toml:17", "websocket.send_queue_bytes")
        .says("E_RANGE", "16384 to 268435456")
        .snapshot();
}

#[test]
fn not_an_accepted_value() {
    invalid("enum", "test")
        .errors(&["E_ENUM"])
        .at("E_ENUM", "test.toml:8", "environment.kind")
        .says("E_ENUM", "did you mean \"production\"?")
        .snapshot();
}

#[test]
fn not_in_the_expected_form() {
    invalid("pattern", "test")
        .errors(&["E_PATTERN"])
        .at("E_PATTERN", "test.toml:12", "server.public_url")
        .snapshot();
}

// ---- loading ----

#[test]
fn toml_syntax_error() {
    invalid("toml_syntax", "test")
        .errors(&["E_TOML_SYNTAX"])
        .at("E_TOML_SYNTAX", "test.toml:9", "(file)")
        .snapshot();
}

#[test]
fn extends_cycle() {
    invalid("extends_cycle", "test")
        .errors(&["E_EXTENDS_CYCLE"])
        .at("E_EXTENDS_CYCLE", "base.toml:2", "(file)")
        .says("E_EXTENDS_CYCLE", "test -> base -> test")
        .snapshot();
}

#[test]
fn extends_not_found() {
    invalid("extends_not_found", "test")
        .errors(&["E_EXTENDS_NOT_FOUND"])
        .at("E_EXTENDS_NOT_FOUND", "test.toml:4", "(file)")
        .snapshot();
}

#[test]
fn unknown_environment_lists_the_available_ones() {
    let r = check_env(&opts("environments", fake_env()), "prod").report;
    let codes: Vec<_> = r.errors.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["E_ENV_NOT_FOUND"]);
    assert_eq!(r.errors[0].file, "environments/prod.toml");
    assert!(
        r.errors[0]
            .hint
            .contains("development, production, staging, test"),
        "{}",
        human(&r)
    );
}

// ---- the other rules ----

#[test]
fn listen_address() {
    invalid("listen_addr", "test")
        .errors(&["E_LISTEN_ADDR"])
        .at("E_LISTEN_ADDR", "test.toml:10", "server.listen")
        .snapshot();
}

#[test]
fn public_url_insecure() {
    invalid_with("public_url_insecure", "production", fake_env())
        .errors(&["E_PUBLIC_URL_INSECURE"])
        .at(
            "E_PUBLIC_URL_INSECURE",
            "production.toml:11",
            "server.public_url",
        )
        .snapshot();
}

#[test]
fn origins_any_in_production() {
    invalid_with("origins_any", "production", fake_env())
        .errors(&["E_ORIGINS_ANY"])
        .at(
            "E_ORIGINS_ANY",
            "production.toml:15",
            "websocket.allowed_origins[0]",
        )
        .snapshot();
}

#[test]
fn origin_format() {
    invalid_with("origin_format", "production", fake_env())
        .errors(&["E_ORIGIN_FORMAT"])
        .at(
            "E_ORIGIN_FORMAT",
            "production.toml:15",
            "websocket.allowed_origins[0]",
        )
        .snapshot();
}

#[test]
fn websocket_path_duplicate() {
    invalid("ws_path_duplicate", "test")
        .errors(&["E_WS_PATH_DUPLICATE"])
        .at(
            "E_WS_PATH_DUPLICATE",
            "test.toml:16",
            "websocket.aliases[0]",
        )
        .snapshot();
}

#[test]
fn client_websocket_url_insecure() {
    invalid_with("client_ws_insecure", "staging", fake_env())
        .errors(&["E_CLIENT_WS_INSECURE"])
        .at(
            "E_CLIENT_WS_INSECURE",
            "staging.toml:52",
            "client.websocket_url",
        )
        .snapshot();
}

#[test]
fn route_method() {
    invalid("route_method", "test")
        .errors(&["E_ROUTE_METHOD"])
        .at("E_ROUTE_METHOD", "test.toml:38", "routes[2].method")
        .snapshot();
}

#[test]
fn route_params() {
    invalid("route_params", "test")
        .errors(&["E_ROUTE_PARAMS"])
        .at("E_ROUTE_PARAMS", "test.toml:40", "routes[2].path")
        .snapshot();
}

#[test]
fn route_path() {
    invalid("route_path", "test")
        .errors(&["E_ROUTE_PATH"])
        .at("E_ROUTE_PATH", "test.toml:41", "routes[2].path")
        .snapshot();
}

#[test]
fn handler_not_allowed_in_production() {
    invalid_with("handler_not_allowed", "production", fake_env())
        .errors(&["E_HANDLER_NOT_ALLOWED"])
        .at(
            "E_HANDLER_NOT_ALLOWED",
            "production.toml:47",
            "routes[2].handler",
        )
        .snapshot();
}

#[test]
fn dev_token_without_hmac_secret() {
    invalid("dev_token_key", "test")
        .errors(&["E_DEV_TOKEN_KEY"])
        .at("E_DEV_TOKEN_KEY", "test.toml:41", "routes[2].handler")
        .snapshot();
}

#[test]
fn jwt_table_missing() {
    invalid("jwt_missing", "test")
        .errors(&["E_JWT_MISSING"])
        .at("E_JWT_MISSING", "test.toml:16", "auth")
        .snapshot();
}

#[test]
fn jwt_algorithm_unknown() {
    invalid("jwt_alg_unknown", "test")
        .errors(&["E_JWT_ALG_UNKNOWN"])
        .at(
            "E_JWT_ALG_UNKNOWN",
            "test.toml:20",
            "auth.jwt.algorithms[0]",
        )
        .says("E_JWT_ALG_UNKNOWN", "did you mean \"HS256\"?")
        .snapshot();
}

#[test]
fn jwt_key_missing() {
    invalid("jwt_key_missing", "test")
        .errors(&["E_JWT_KEY_MISSING"])
        .at("E_JWT_KEY_MISSING", "test.toml:19", "auth.jwt")
        .snapshot();
}

#[test]
fn jwt_key_conflict() {
    invalid("jwt_key_conflict", "test")
        .errors(&["E_JWT_KEY_CONFLICT"])
        .at("E_JWT_KEY_CONFLICT", "test.toml:21", "auth.jwt")
        .snapshot();
}

#[test]
fn jwt_key_family() {
    invalid("jwt_key_family", "test")
        .errors(&["E_JWT_KEY_FAMILY"])
        .at("E_JWT_KEY_FAMILY", "test.toml:22", "auth.jwt.algorithms")
        .snapshot();
}

#[test]
fn key_file_unreadable() {
    invalid("key_file", "test")
        .errors(&["E_KEY_FILE"])
        .at("E_KEY_FILE", "test.toml:21", "auth.jwt.public_key_file")
        .says("E_KEY_FILE", "tests/fixtures/invalid/key_file/missing.pem")
        .snapshot();
}

#[test]
fn jwks_url_over_http() {
    invalid_with("jwks_url", "staging", fake_env())
        .errors(&["E_JWKS_URL"])
        .at("E_JWKS_URL", "staging.toml:22", "auth.jwt.jwks_url")
        .snapshot();
}

#[test]
fn oidc_issuer_not_a_url() {
    invalid("oidc_issuer", "test")
        .errors(&["E_OIDC_ISSUER"])
        .at("E_OIDC_ISSUER", "test.toml:21", "auth.jwt.oidc_issuer")
        .says("E_OIDC_ISSUER", "not an absolute URL")
        .snapshot();
}

#[test]
fn issuer_differs_from_oidc_issuer() {
    invalid("jwt_issuer_conflict", "test")
        .errors(&["E_JWT_ISSUER_CONFLICT"])
        .at("E_JWT_ISSUER_CONFLICT", "test.toml:22", "auth.jwt.issuer")
        .snapshot();
}

#[test]
fn remote_key_option_without_a_remote_source() {
    invalid("jwks_option_unused", "test")
        .errors(&["E_JWKS_OPTION_UNUSED"])
        .at(
            "E_JWKS_OPTION_UNUSED",
            "test.toml:22",
            "auth.jwt.jwks_min_refresh_s",
        )
        .snapshot();
}

#[test]
fn jwks_min_refresh_above_max() {
    invalid("jwks_refresh_range", "test")
        .errors(&["E_JWKS_REFRESH_RANGE"])
        .at(
            "E_JWKS_REFRESH_RANGE",
            "test.toml:23",
            "auth.jwt.jwks_max_refresh_s",
        )
        .snapshot();
}

#[test]
fn ca_file_unreadable() {
    invalid("ca_file", "test")
        .errors(&["E_CA_FILE"])
        .at("E_CA_FILE", "test.toml:22", "auth.jwt.ca_file")
        .says("E_CA_FILE", "tests/fixtures/invalid/ca_file/missing-ca.pem")
        .snapshot();
}

#[test]
fn tls_certificate_file_missing() {
    invalid("tls_file", "test")
        .errors(&["E_TLS_FILE"])
        .at("E_TLS_FILE", "test.toml:13", "server.tls.cert_file")
        .snapshot();
}

#[test]
fn tls_certificate_file_without_a_certificate() {
    invalid("tls_cert", "test")
        .errors(&["E_TLS_CERT"])
        .at("E_TLS_CERT", "test.toml:13", "server.tls.cert_file")
        .snapshot();
}

#[test]
fn tls_key_file_without_a_key() {
    invalid("tls_key", "test")
        .errors(&["E_TLS_KEY"])
        .at("E_TLS_KEY", "test.toml:14", "server.tls.key_file")
        .snapshot();
}

#[test]
fn tls_key_of_another_certificate() {
    invalid("tls_key_mismatch", "test")
        .errors(&["E_TLS_KEY_MISMATCH"])
        .at("E_TLS_KEY_MISMATCH", "test.toml:14", "server.tls.key_file")
        .says("E_TLS_KEY_MISMATCH", "test_only_other_key.pem")
        .snapshot();
}

#[test]
fn tls_certificate_expired() {
    invalid("tls_cert_expired", "test")
        .errors(&["E_TLS_CERT_EXPIRED"])
        .at("E_TLS_CERT_EXPIRED", "test.toml:13", "server.tls.cert_file")
        .says("E_TLS_CERT_EXPIRED", "2020-01-01")
        .snapshot();
}

#[test]
fn trusted_proxy_not_a_cidr() {
    invalid("trusted_proxy_cidr", "test")
        .errors(&["E_TRUSTED_PROXY_CIDR"])
        .at(
            "E_TRUSTED_PROXY_CIDR",
            "test.toml:11",
            "server.trusted_proxies[0]",
        )
        .snapshot();
}

/// Warnings have fixtures too: the report pins the one warning and no error.
#[test]
fn trusted_proxies_of_the_whole_internet_warn() {
    let f = invalid("trusted_proxy_any", "test");
    f.errors(&[]).snapshot();
    let codes: Vec<&str> = f.report.warnings.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["W_TRUSTED_PROXY_ANY"]);
}

#[test]
fn bypass_from_behind_a_tls_proxy_without_trusted_proxies_warns() {
    let f = invalid("bypass_behind_proxy", "test");
    f.errors(&[]).snapshot();
    let codes: Vec<&str> = f.report.warnings.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["W_BYPASS_BEHIND_PROXY"]);
}

#[test]
fn tls_certificate_expiring_within_14_days_warns() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let in_a_week = chrono::Utc::now() + chrono::Duration::days(7);
    params.not_after = rcgen::date_time_ymd(
        chrono::Datelike::year(&in_a_week),
        chrono::Datelike::month(&in_a_week) as u8,
        chrono::Datelike::day(&in_a_week) as u8,
    );
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let fixture = std::fs::read_to_string("tests/fixtures/invalid/tls_key_mismatch/test.toml")
        .unwrap()
        .replace("../../tls/test_only_cert.pem", "cert.pem")
        .replace("../../tls/test_only_other_key.pem", "key.pem");
    std::fs::write(dir.path().join("test.toml"), fixture).unwrap();
    let report = check_env(&opts(dir.path().to_str().unwrap(), BTreeMap::new()), "test").report;
    assert!(report.errors.is_empty(), "{}", human(&report));
    let warnings: Vec<(&str, &str)> = report
        .warnings
        .iter()
        .map(|d| (d.code, d.key.as_str()))
        .collect();
    assert_eq!(warnings, [("W_TLS_CERT_EXPIRING", "server.tls.cert_file")]);
    assert!(
        report.warnings[0]
            .message
            .contains(&in_a_week.format("%Y-%m-%d").to_string()),
        "{}",
        human(&report)
    );
}

#[test]
fn token_source_duplicate() {
    invalid("token_source_duplicate", "test")
        .errors(&["E_TOKEN_SOURCE_DUPLICATE"])
        .at(
            "E_TOKEN_SOURCE_DUPLICATE",
            "test.toml:19",
            "auth.token_sources[2]",
        )
        .says("E_TOKEN_SOURCE_DUPLICATE", "`header`")
        .snapshot();
}

#[test]
fn bypass_without_any_secret() {
    invalid("bypass_no_secret", "test")
        .errors(&["E_BYPASS_NO_SECRET"])
        .at("E_BYPASS_NO_SECRET", "test.toml:24", "auth.bypass[0]")
        .snapshot();
}

#[test]
fn bypass_with_two_secret_sources() {
    invalid("bypass_secret_conflict", "test")
        .errors(&["E_BYPASS_SECRET_CONFLICT"])
        .at("E_BYPASS_SECRET_CONFLICT", "test.toml:25", "auth.bypass[0]")
        .snapshot();
}

#[test]
fn bypass_secret_short_in_staging() {
    let mut env = fake_env();
    env.insert("PORTCULLIS_BYPASS_SECRET".into(), "123456".into());
    invalid_with("bypass_secret_short", "staging", env)
        .errors(&["E_BYPASS_SECRET_SHORT"])
        .at(
            "E_BYPASS_SECRET_SHORT",
            "staging.toml:29",
            "auth.bypass[0].secret_env",
        )
        .snapshot();
}

#[test]
fn bypass_duplicate_name() {
    invalid("bypass_duplicate", "test")
        .errors(&["E_BYPASS_DUPLICATE"])
        .at("E_BYPASS_DUPLICATE", "test.toml:32", "auth.bypass[1].name")
        .snapshot();
}

#[test]
fn bypass_header_with_other_meaning() {
    invalid("bypass_header", "test")
        .errors(&["E_BYPASS_HEADER"])
        .at("E_BYPASS_HEADER", "test.toml:26", "auth.bypass[0].header")
        .snapshot();
}

#[test]
fn bypass_source_not_a_cidr() {
    invalid("bypass_cidr", "test")
        .errors(&["E_BYPASS_CIDR"])
        .at("E_BYPASS_CIDR", "test.toml:29", "auth.bypass[0].from[0]")
        .snapshot();
}

#[test]
fn no_database() {
    invalid("no_database", "test")
        .errors(&["E_NO_DATABASE"])
        .at("E_NO_DATABASE", "test.toml:1", "services")
        .snapshot();
}

#[test]
fn multiple_databases() {
    invalid("multiple_databases", "test")
        .errors(&["E_MULTIPLE_DATABASES"])
        .at("E_MULTIPLE_DATABASES", "test.toml:23", "services.database")
        .snapshot();
}

#[test]
fn multiple_redis() {
    invalid("multiple_redis", "test")
        .errors(&["E_MULTIPLE_REDIS"])
        .at("E_MULTIPLE_REDIS", "test.toml:50", "services.bus_b")
        .snapshot();
}

#[test]
fn required_service_without_url() {
    invalid("service_no_url", "test")
        .errors(&["E_SERVICE_NO_URL"])
        .at("E_SERVICE_NO_URL", "test.toml:28", "services.model")
        .snapshot();
}

#[test]
fn service_url_and_url_env() {
    invalid("service_url_conflict", "test")
        .errors(&["E_SERVICE_URL_CONFLICT"])
        .at(
            "E_SERVICE_URL_CONFLICT",
            "test.toml:24",
            "services.database",
        )
        .snapshot();
}

#[test]
fn service_url_scheme() {
    invalid("service_url_scheme", "test")
        .errors(&["E_SERVICE_URL_SCHEME"])
        .at(
            "E_SERVICE_URL_SCHEME",
            "test.toml:26",
            "services.database.url",
        )
        .snapshot();
}

#[test]
fn unknown_component_kind() {
    invalid("unknown_component_kind", "test")
        .errors(&["E_ENUM"])
        .at("E_ENUM", "test.toml:64", "components.session.kind")
        .says("E_ENUM", "use one of: websocket")
        .snapshot();
}

#[test]
fn no_agent() {
    invalid("no_agent", "test")
        .errors(&["E_NO_AGENT"])
        .at("E_NO_AGENT", "test.toml:1", "agents")
        .snapshot();
}

#[test]
fn two_default_agents() {
    invalid("agent_default", "test")
        .errors(&["E_AGENT_DEFAULT"])
        .at("E_AGENT_DEFAULT", "test.toml:46", "agents[1].default")
        .snapshot();
}

#[test]
fn agent_duplicate_name() {
    invalid("agent_duplicate", "test")
        .errors(&["E_AGENT_DUPLICATE"])
        .at("E_AGENT_DUPLICATE", "test.toml:44", "agents[1].name")
        .snapshot();
}

#[test]
fn agent_without_model() {
    invalid("agent_model", "test")
        .errors(&["E_AGENT_MODEL"])
        .at("E_AGENT_MODEL", "test.toml:41", "agents[0]")
        .snapshot();
}

#[test]
fn agent_with_unknown_service() {
    invalid("agent_service", "test")
        .errors(&["E_AGENT_SERVICE"])
        .at("E_AGENT_SERVICE", "test.toml:41", "agents[0].service")
        .snapshot();
}

#[test]
fn unknown_provider() {
    invalid("unknown_provider", "test")
        .errors(&["E_UNKNOWN_PROVIDER"])
        .at("E_UNKNOWN_PROVIDER", "test.toml:39", "agents[0].provider")
        .says("E_UNKNOWN_PROVIDER", "did you mean `openai`?")
        .snapshot();
}

#[test]
fn unknown_tool() {
    invalid("unknown_tool", "test")
        .errors(&["E_UNKNOWN_TOOL"])
        .at("E_UNKNOWN_TOOL", "test.toml:40", "agents[0].tools[1]")
        .says("E_UNKNOWN_TOOL", "did you mean `calculator`?")
        .snapshot();
}

// ---- all at once ----

#[test]
fn schema_and_semantic_errors_are_reported_in_one_run() {
    let f = invalid("multi_error", "test");
    f.errors(&[
        "E_UNKNOWN_KEY",
        "E_HEARTBEAT_TIMEOUT",
        "E_ROUTE_CONFLICT",
        "E_CLIENT_WS_URL",
    ])
    .at("E_UNKNOWN_KEY", "test.toml:14", "server.max_conections")
    .at(
        "E_HEARTBEAT_TIMEOUT",
        "test.toml:19",
        "websocket.heartbeat_ms",
    )
    .at("E_ROUTE_CONFLICT", "test.toml:44", "routes[2].path")
    .at("E_CLIENT_WS_URL", "test.toml:53", "client.websocket_url")
    .says("E_UNKNOWN_KEY", "did you mean `max_connections`?")
    .snapshot();
}

// ---- the components table is what the runtime builds ----

#[test]
fn a_component_the_runtime_builds_is_declared() {
    invalid("component_missing", "test")
        .errors(&["E_COMPONENT_MISSING"])
        .says("E_COMPONENT_MISSING", "[components.event_bus]")
        .snapshot();
}

#[test]
fn a_component_lists_what_it_is_built_from() {
    invalid("component_needs", "test")
        .errors(&["E_COMPONENT_NEEDS"])
        .at(
            "E_COMPONENT_NEEDS",
            "test.toml:68",
            "components.session.needs",
        )
        .says("E_COMPONENT_NEEDS", "rate_limiter")
        .snapshot();
}

#[test]
fn a_need_nothing_uses_is_refused() {
    invalid("component_unused_need", "test")
        .errors(&["E_COMPONENT_UNUSED_NEED"])
        .at(
            "E_COMPONENT_UNUSED_NEED",
            "test.toml:60",
            "components.metrics.needs[0]",
        )
        .snapshot();
}

#[test]
fn a_rate_limiter_shared_through_redis_needs_a_redis_service() {
    invalid("rate_limiter_no_redis", "test")
        .errors(&["E_RATE_LIMITER_NO_REDIS"])
        .at(
            "E_RATE_LIMITER_NO_REDIS",
            "test.toml:61",
            "components.rate_limiter.kind",
        )
        .says("E_RATE_LIMITER_NO_REDIS", "kind = \"local\"")
        .snapshot();
}

#[test]
fn several_nodes_on_a_sqlite_store_are_refused() {
    invalid("nodes_sqlite", "test")
        .errors(&["E_NODES_SQLITE"])
        .at("E_NODES_SQLITE", "test.toml:12", "server.nodes")
        .says("E_NODES_SQLITE", "postgres")
        .snapshot();
}

// ---- late failures: what only building the components finds ----

#[test]
fn a_pem_file_that_holds_no_key_is_refused_by_check() {
    invalid("key_parse", "test")
        .errors(&["E_KEY_PARSE"])
        .at("E_KEY_PARSE", "test.toml:22", "auth.jwt.public_key_file")
        .snapshot();
}

#[test]
fn a_jwks_without_a_usable_key_is_refused_by_check() {
    invalid("jwks_no_usable_key", "test")
        .errors(&["E_JWKS_NO_USABLE_KEY"])
        .at("E_JWKS_NO_USABLE_KEY", "test.toml:22", "auth.jwt.jwks_url")
        .snapshot();
}

#[test]
fn a_remote_jwks_compiles_without_network() {
    let outcome = check_env(&opts("tests/fixtures/remote_jwks", BTreeMap::new()), "test");
    assert!(outcome.report.is_ok(), "{}", human(&outcome.report));
    assert!(outcome.compiled.is_some_and(|c| c.verifier.is_some()));
}

#[test]
fn a_database_url_its_driver_cannot_use_is_refused_by_check() {
    invalid("service_url", "test")
        .errors(&["E_SERVICE_URL"])
        .at("E_SERVICE_URL", "test.toml:27", "services.database.url")
        .says("E_SERVICE_URL", "invalid port number")
        .snapshot();
}

// ---- model services and openai agents ----

#[test]
fn fallback_to_an_agent_that_does_not_exist() {
    invalid("agent_fallback", "test")
        .errors(&["E_AGENT_FALLBACK"])
        .at("E_AGENT_FALLBACK", "test.toml:46", "agents[0].fallback")
        .says("E_AGENT_FALLBACK", "name one of: assistant")
        .snapshot();
}

#[test]
fn fallbacks_that_loop() {
    invalid("agent_fallback_cycle", "test")
        .errors(&["E_AGENT_FALLBACK_CYCLE", "E_AGENT_FALLBACK_CYCLE"])
        .at(
            "E_AGENT_FALLBACK_CYCLE",
            "test.toml:47",
            "agents[0].fallback",
        )
        .says("E_AGENT_FALLBACK_CYCLE", "assistant -> second -> assistant")
        .snapshot();
}

#[test]
fn model_settings_on_a_scripted_agent() {
    invalid("agent_option_unused", "test")
        .errors(&["E_AGENT_OPTION_UNUSED", "E_AGENT_OPTION_UNUSED"])
        .at("E_AGENT_OPTION_UNUSED", "test.toml:41", "agents[0].model")
        .snapshot();
}

#[test]
fn model_keys_on_a_database_service() {
    invalid("service_option_unused", "test")
        .errors(&["E_SERVICE_OPTION_UNUSED"])
        .at(
            "E_SERVICE_OPTION_UNUSED",
            "test.toml:26",
            "services.database.read_timeout_ms",
        )
        .snapshot();
}

#[test]
fn api_key_inline_and_from_a_variable() {
    invalid("service_key_conflict", "test")
        .errors(&["E_SERVICE_KEY_CONFLICT"])
        .at(
            "E_SERVICE_KEY_CONFLICT",
            "test.toml:30",
            "services.model.api_key",
        )
        .snapshot();
}

#[test]
fn temperature_and_answer_bound_out_of_range() {
    invalid("range_agent", "test")
        .errors(&["E_RANGE", "E_RANGE"])
        .at("E_RANGE", "test.toml:48", "agents[0].temperature")
        .snapshot();
}

#[test]
fn plain_http_model_url_in_production() {
    invalid_with("model_url_insecure", "production", fake_env())
        .errors(&["E_MODEL_URL_INSECURE"])
        .at(
            "E_MODEL_URL_INSECURE",
            "production.toml:31",
            "services.model.url",
        )
        .snapshot();
}

#[test]
fn plain_http_model_url_from_a_variable_in_production() {
    let mut env = fake_env();
    env.insert(
        "PORTCULLIS_MODEL_URL".into(),
        "http://models.example.com/v1".into(),
    );
    invalid_with("model_url_env_insecure", "production", env)
        .errors(&["E_MODEL_URL_INSECURE"])
        .at(
            "E_MODEL_URL_INSECURE",
            "production.toml:32",
            "services.model.url_env",
        );
}

#[test]
fn an_agent_on_a_model_service_without_a_url() {
    invalid("agent_service_no_url", "test")
        .errors(&["E_AGENT_SERVICE"])
        .at("E_AGENT_SERVICE", "test.toml:45", "agents[0].service")
        .says("E_AGENT_SERVICE", "no url or url_env");
}

#[test]
fn a_fallback_on_a_scripted_agent() {
    invalid("agent_fallback_unused", "test")
        .errors(&["E_AGENT_OPTION_UNUSED"])
        .at(
            "E_AGENT_OPTION_UNUSED",
            "test.toml:41",
            "agents[0].fallback",
        );
}

#[test]
fn inline_api_key_in_production() {
    invalid_with("inline_secret_api_key", "production", fake_env())
        .errors(&["E_INLINE_SECRET"])
        .at(
            "E_INLINE_SECRET",
            "production.toml:33",
            "services.model.api_key",
        )
        .snapshot();
}

/// Codes that need no fixture here: internal failures (`E_INTERNAL`, `E_LOAD`: figment
/// failing to merge values that already parsed), the schema catch-all, a missing
/// environment (tested above without a fixture), and drift (`tests/fixtures/drift/`,
/// checked by `drift::every_drift_error_code_has_a_fixture`), and the declared tools'
/// HTTP client failing to build (an unreadable system CA store, not a configuration).
const NOT_FIXTURE_CODES: [&str; 5] = [
    "E_INTERNAL",
    "E_LOAD",
    "E_SCHEMA",
    "E_ENV_NOT_FOUND",
    "E_TOOL_SETUP",
];

/// Every `.rs` file under `dir`, subdirectories included.
fn sources(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// Every error code the validator can emit has a fixture named after it, so a new rule
/// without a fixture fails here.
#[test]
fn every_error_code_has_a_fixture() {
    let code = regex::Regex::new(r#""(E_[A-Z_]+)""#).unwrap();
    let mut codes = BTreeSet::new();
    for dir in ["src/validate", "src/config", "src/compile"] {
        for path in sources(std::path::Path::new(dir)) {
            let text = std::fs::read_to_string(path).unwrap();
            codes.extend(code.captures_iter(&text).map(|c| c[1].to_string()));
        }
    }
    assert!(codes.contains("E_SCOPE"), "found no codes in src/");
    let missing: Vec<&String> = codes
        .iter()
        .filter(|c| !NOT_FIXTURE_CODES.contains(&c.as_str()) && !c.starts_with("E_DRIFT_"))
        .filter(|c| {
            let dir = format!(
                "tests/fixtures/invalid/{}",
                c.trim_start_matches("E_").to_lowercase()
            );
            !std::path::Path::new(&dir).is_dir()
        })
        .collect();
    assert!(missing.is_empty(), "codes without a fixture: {missing:?}");
}

#[test]
fn a_redis_event_bus_needs_a_redis_service() {
    invalid("event_bus_no_redis", "test")
        .errors(&["E_EVENT_BUS_NO_REDIS"])
        .at(
            "E_EVENT_BUS_NO_REDIS",
            "test.toml:45",
            "components.event_bus.kind",
        )
        .says("E_EVENT_BUS_NO_REDIS", "services.redis")
        .snapshot();
}

#[test]
fn several_nodes_refuse_a_local_event_bus() {
    invalid("event_bus_local", "test")
        .errors(&["E_EVENT_BUS_LOCAL"])
        .at(
            "E_EVENT_BUS_LOCAL",
            "test.toml:46",
            "components.event_bus.kind",
        )
        .says("E_EVENT_BUS_LOCAL", "server.nodes = 2")
        .snapshot();
}

// ---- declared tools (`[tools.NAME]`) ----

#[test]
fn tool_declared_with_a_built_in_name() {
    invalid("tool_name", "test")
        .errors(&["E_TOOL_NAME"])
        .at("E_TOOL_NAME", "test.toml:46", "tools.clock")
        .snapshot();
}

#[test]
fn tool_keys_of_the_wrong_kind_or_missing() {
    invalid("tool_key", "test")
        .errors(&["E_TOOL_KEY", "E_TOOL_KEY"])
        .at("E_TOOL_KEY", "test.toml:46", "tools.weather")
        .says("E_TOOL_KEY", "needs `parameters`")
        .snapshot();
}

#[test]
fn tool_over_plain_http_in_production() {
    invalid_with("tool_url", "production", fake_env())
        .errors(&["E_TOOL_URL"])
        .at("E_TOOL_URL", "production.toml:51", "tools.weather.url")
        .says("E_TOOL_URL", "is not https://")
        .snapshot();
}

#[test]
fn tool_parameters_not_a_json_schema() {
    invalid("tool_parameters", "test")
        .errors(&["E_TOOL_PARAMETERS"])
        .at(
            "E_TOOL_PARAMETERS",
            "test.toml:50",
            "tools.weather.parameters",
        )
        .says("E_TOOL_PARAMETERS", "not a valid JSON Schema")
        .snapshot();
}

#[test]
fn tool_parameters_not_an_object_schema() {
    invalid("tool_parameters_object", "test")
        .errors(&["E_TOOL_PARAMETERS"])
        .at(
            "E_TOOL_PARAMETERS",
            "test.toml:50",
            "tools.weather.parameters",
        )
        .says("E_TOOL_PARAMETERS", "must describe an object")
        .snapshot();
}

#[test]
fn mcp_allow_entry_empty() {
    invalid("tool_allow", "test")
        .errors(&["E_TOOL_ALLOW"])
        .at("E_TOOL_ALLOW", "test.toml:49", "tools.docs.allow[1]")
        .snapshot();
}

#[test]
fn mcp_tool_without_allow_list() {
    invalid("tool_allow_missing", "test")
        .errors(&["E_TOOL_ALLOW"])
        .at("E_TOOL_ALLOW", "test.toml:46", "tools.docs")
        .snapshot();
}

#[test]
fn mcp_tool_needing_the_user_breaks_the_scope_rule() {
    invalid("tool_scope", "test")
        .errors(&["E_SCOPE"])
        .at("E_SCOPE", "test.toml:50", "tools.docs.needs[0]")
        .says("E_SCOPE", "process-scope")
        .snapshot();
}

#[test]
fn tool_needing_something_other_than_the_user() {
    invalid("tool_needs", "test")
        .errors(&["E_TOOL_NEEDS"])
        .at("E_TOOL_NEEDS", "test.toml:51", "tools.weather.needs[0]")
        .snapshot();
}

#[test]
fn agent_gets_two_tools_of_one_name() {
    invalid("tool_clash", "test")
        .errors(&["E_TOOL_CLASH"])
        .at("E_TOOL_CLASH", "test.toml:44", "agents[0].tools[1]")
        .says("E_TOOL_CLASH", "two tools named `search`")
        .snapshot();
}

#[test]
fn tool_of_unknown_kind() {
    invalid("tool_kind", "test")
        .errors(&["E_ENUM"])
        .at("E_ENUM", "test.toml:47", "tools.weather.kind")
        .snapshot();
}

#[test]
fn agent_lists_a_misspelt_declared_tool() {
    invalid("tool_unknown", "test")
        .errors(&["E_UNKNOWN_TOOL"])
        .at("E_UNKNOWN_TOOL", "test.toml:44", "agents[0].tools[0]")
        .says("E_UNKNOWN_TOOL", "did you mean `weather`?")
        .snapshot();
}

#[test]
fn a_declared_tool_no_agent_lists_is_a_warning() {
    let outcome = check_env(&opts("tests/fixtures/tool_unused", BTreeMap::new()), "test");
    let report = &outcome.report;
    assert!(report.errors.is_empty(), "{}", human(report));
    let warnings: Vec<(&str, &str)> = report
        .warnings
        .iter()
        .map(|w| (w.code, w.key.as_str()))
        .collect();
    assert_eq!(warnings, [("W_TOOL_UNUSED", "tools.weather")]);
}
