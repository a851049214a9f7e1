//! The built `portcullis` binary: exit codes of `check` and `serve`, and `--format json`.
//! Each child gets exactly the environment the test gives it (`env_clear`).

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::*;

fn portcullis(args: &[&str], env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(env);
    cmd
}

fn run(args: &[&str], env: &BTreeMap<String, String>) -> Output {
    portcullis(args, env).output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_exits_0_when_valid_and_1_on_errors() {
    let ok = run(&["check", "--env", "test"], &vars(&[]));
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("ok test: valid"));

    let bad = run(
        &[
            "check",
            "--env",
            "test",
            "--config-dir",
            "tests/fixtures/invalid/scope",
        ],
        &vars(&[]),
    );
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    assert!(stdout(&bad).contains("error[E_SCOPE] tests/fixtures/invalid/scope/test.toml:64:"));

    // Staging without its secrets is an error, not a crash.
    let unset = run(&["check", "--env", "staging"], &vars(&[]));
    assert_eq!(unset.status.code(), Some(1));
    let all = run(&["check", "--all"], &fake_env());
    assert_eq!(all.status.code(), Some(0), "{}", stdout(&all));
}

#[test]
fn deny_warnings_turns_warnings_into_failure() {
    let args = [
        "check",
        "--env",
        "test",
        "--config-dir",
        "tests/fixtures/warnings",
    ];
    let lenient = run(&args, &vars(&[]));
    assert_eq!(lenient.status.code(), Some(0), "{}", stdout(&lenient));
    assert!(stdout(&lenient).contains("warning[W_ORIGINS_ANY]"));
    let strict = run(&[&args[..], &["--deny-warnings"]].concat(), &vars(&[]));
    assert_eq!(strict.status.code(), Some(1), "{}", stdout(&strict));
}

#[test]
fn json_format_parses_and_matches_the_exit_code() {
    let out = run(&["check", "--all", "--format", "json"], &fake_env());
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["ok"], true);
    let envs: Vec<&str> = v["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["env"].as_str().unwrap())
        .collect();
    assert_eq!(
        envs,
        [
            "development",
            "production",
            "staging",
            "test",
            "(drift between environments)"
        ]
    );

    let out = run(
        &["check", "--env", "production", "--format", "json"],
        &vars(&[]),
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["ok"], false);
    let first = &v["environments"][0]["errors"][0];
    assert_eq!(first["code"], "E_ENV_MISSING");
    assert_eq!(first["file"], "environments/production.toml");
    assert_eq!(first["line"], 20);
    assert_eq!(first["key"], "auth.jwt.secret_env");
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = run(&["schema"], &vars(&[]));
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read("schema/portcullis.schema.json").unwrap();
    assert!(
        out.stdout == committed,
        "run `cargo run -- schema > schema/portcullis.schema.json`"
    );
}

#[test]
fn serve_refuses_production_without_secrets_with_78_and_never_binds() {
    let port = crate::support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = portcullis(
        &[
            "serve",
            "--env",
            "production",
            "--config-dir",
            "environments",
        ],
        &vars(&[("PORTCULLIS_SERVER__LISTEN", &listen)]),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running with production secrets unset");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(78), "{stderr}");
    // One report naming every missing variable, not one per attempt.
    for var in [
        "PORTCULLIS_JWT_SECRET",
        "PORTCULLIS_DATABASE_URL",
        "PORTCULLIS_REDIS_URL",
        "PORTCULLIS_MODEL_API_KEY",
    ] {
        assert!(stderr.contains(var), "{var} not named:\n{stderr}");
    }
    assert_eq!(
        stderr.matches("error[E_ENV_MISSING]").count(),
        4,
        "{stderr}"
    );
    assert!(stderr.contains("FAILED production: 4 errors"), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    // It never bound: the port is still free.
    TcpListener::bind(&listen).expect("serve must not have bound the port");
}

/// The served process keeps no transparent huge pages: mimalloc is built with `no_thp`.
/// With them, the kernel zeroes 2 MiB in the fault of each first touch, which stalled
/// every connection of a growing server by 15–50 ms (docs/PERFORMANCE.md item 9); a
/// build without the feature holds megabytes of them right after boot on a kernel that
/// offers them (`madvise` or `always` in /sys/kernel/mm/transparent_hugepage/enabled).
#[test]
fn the_served_process_holds_no_transparent_huge_pages() {
    let port = crate::support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", data.path().join("thp.db").display());
    let mut child = portcullis(
        &["serve", "--env", "test", "--config-dir", "environments"],
        &vars(&[
            ("PORTCULLIS_SERVER__LISTEN", &listen),
            ("PORTCULLIS_SERVICES__DATABASE__URL", &db),
        ]),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve exited before listening"
        );
        assert!(Instant::now() < deadline, "serve did not listen in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the store connect and the writer prepare its statements.
    std::thread::sleep(Duration::from_millis(300));
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    let smaps = smaps.expect("/proc/PID/smaps_rollup of the served process");
    let huge = smaps
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .expect("an AnonHugePages line");
    assert_eq!(huge.trim(), "0 kB", "{smaps}");
}
