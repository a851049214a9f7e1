//! The embedded default runs anywhere: from a directory without `environments/`, the
//! built-in environments are checked, explained and served; `portcullis init` writes them
//! out; a missing environment names where it looked; `--no-env` checks production
//! without its secrets.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::*;

/// The binary, run in `dir` with exactly `env` (no inherited variables).
fn portcullis(dir: &Path, args: &[&str], env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(args).current_dir(dir).env_clear().envs(env);
    cmd
}

fn run(dir: &Path, args: &[&str], env: &BTreeMap<String, String>) -> Output {
    portcullis(dir, args, env)
        .output()
        .expect("the binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn outside_the_repository_the_built_in_environments_are_checked_and_explained() {
    let empty = tempfile::tempdir().unwrap();
    let check = run(empty.path(), &["check", "--all", "--no-env"], &vars(&[]));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let explain = run(
        empty.path(),
        &["explain", "--env", "development"],
        &vars(&[]),
    );
    assert_eq!(explain.status.code(), Some(0), "{}", text(&explain));
    assert!(
        text(&explain).contains("built-in:development.toml"),
        "explain names the built-in source: {}",
        text(&explain)
    );
    let missing = run(empty.path(), &["check", "--env", "qa"], &vars(&[]));
    assert_eq!(missing.status.code(), Some(1));
    let said = text(&missing);
    assert!(said.contains("E_ENV_NOT_FOUND"), "{said}");
    assert!(
        said.contains("development, test, staging, production"),
        "names the environments it found: {said}"
    );
}

#[test]
fn a_missing_environment_names_the_directory_searched_and_what_it_holds() {
    let out = run(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[
            "check",
            "--config-dir",
            "tests/fixtures/drift/bypass",
            "--env",
            "prod",
        ],
        &vars(&[]),
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("in tests/fixtures/drift/bypass"), "{said}");
    assert!(said.contains("staging, test"), "{said}");
}

#[test]
fn serve_from_an_empty_directory_boots_the_embedded_default_and_keeps_data_in_data_dir() {
    let empty = tempfile::tempdir().unwrap();
    let env = vars(&[("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:0")]);
    let mut child = portcullis(empty.path(), &["serve"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in stdout.lines().map_while(Result::ok) {
        seen.push(line.clone());
        if line.contains("store connected") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = seen.join("\n");
    assert!(log.contains("built-in `development` environment"), "{log}");
    assert!(log.contains("store connected"), "{log}");
    let db = empty.path().join("data").join("portcullis-dev.db");
    assert!(db.exists(), "the SQLite file is under ./data: {log}");
}

#[test]
fn init_writes_editable_files_that_check_and_keeps_existing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("conf");
    let out = run(dir.path(), &["init", "conf"], &vars(&[]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for f in [
        "base.toml",
        "development.toml",
        "production.toml",
        "portcullis.schema.json",
    ] {
        assert!(target.join(f).exists(), "{f} written: {}", text(&out));
    }
    let dev = std::fs::read_to_string(target.join("development.toml")).unwrap();
    assert!(
        dev.starts_with("#:schema portcullis.schema.json\n"),
        "{dev}"
    );
    let check = run(
        dir.path(),
        &["check", "--config-dir", "conf", "--all", "--no-env"],
        &vars(&[]),
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    std::fs::write(target.join("development.toml"), "# mine\n").unwrap();
    let again = run(dir.path(), &["init", "conf"], &vars(&[]));
    assert!(text(&again).contains("kept"), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(target.join("development.toml")).unwrap(),
        "# mine\n"
    );
}

#[test]
fn no_env_checks_production_without_its_secrets_but_still_refuses_real_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let strict = run(root, &["check", "--env", "production"], &vars(&[]));
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict));
    assert!(text(&strict).contains("E_ENV_MISSING"));
    let lenient = run(
        root,
        &["check", "--env", "production", "--no-env"],
        &vars(&[]),
    );
    assert_eq!(lenient.status.code(), Some(0), "{}", text(&lenient));
    let routes = run(
        root,
        &["routes", "--env", "production", "--no-env"],
        &vars(&[]),
    );
    assert_eq!(routes.status.code(), Some(0), "{}", text(&routes));
    assert!(text(&routes).contains("/websocket"), "{}", text(&routes));
    // Everything but the variables is still checked.
    let fixture = run(
        root,
        &[
            "check",
            "--config-dir",
            "tests/fixtures/invalid/bypass_in_production",
            "--env",
            "production",
            "--no-env",
        ],
        &vars(&[]),
    );
    assert_eq!(fixture.status.code(), Some(1), "{}", text(&fixture));
    assert!(text(&fixture).contains("E_BYPASS_IN_PRODUCTION"));
    assert!(!text(&fixture).contains("E_ENV_MISSING"));
}

#[test]
fn a_wrong_type_does_not_hide_the_other_errors_of_the_file() {
    let o = compile_fixture("type_hides_nothing");
    let codes: Vec<&str> = o.errors.iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        ["E_HEARTBEAT_TIMEOUT", "E_TYPE", "E_ROUTE_CONFLICT"],
        "{}",
        portcullis::report::human(&o)
    );
}

fn compile_fixture(rule: &str) -> portcullis::diagnostic::Report {
    let dir = format!("tests/fixtures/invalid/{rule}");
    portcullis::compile::compile(&opts(&dir, BTreeMap::new()), "test").report
}

/// `serve` never runs a configuration compiled with `--no-env`.
#[tokio::test]
async fn a_configuration_checked_with_no_env_is_not_servable() {
    let mut o = opts("environments", BTreeMap::new());
    o.no_env = true;
    let compiled = portcullis::compile::compile(&o, "production")
        .compiled
        .expect("valid without its variables");
    let err = portcullis::server::start(compiled)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--no-env"), "{err}");
}
