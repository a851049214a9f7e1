//! One gate: every fixture and every shipped environment gets the same verdict from
//! `portcullis check` and from `portcullis serve` (the real binary, as ops run it):
//! `check` exits 1 exactly when `serve` refuses with 78 before binding, and `check`
//! exits 0 exactly when `serve` starts listening.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::*;

/// How long `serve` may take to say it listens (or to exit) on a loaded machine.
const BOOT: Duration = Duration::from_secs(20);

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Valid,
    Refused,
}

fn command(args: &[&str], env: &BTreeMap<String, String>, data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(env)
        .env("PORTCULLIS_DATA_DIR", data)
        .env("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:0");
    cmd
}

fn check(dir: &str, name: &str, env: &BTreeMap<String, String>, data: &Path) -> Verdict {
    let out = command(&["check", "--config-dir", dir, "--env", name], env, data)
        .output()
        .expect("check runs");
    match out.status.code() {
        Some(0) => Verdict::Valid,
        Some(1) => Verdict::Refused,
        other => panic!("check {dir} {name}: exit {other:?}"),
    }
}

/// Starts `serve` and waits until it either logs that it listens or exits.
fn serve(dir: &str, name: &str, env: &BTreeMap<String, String>, data: &Path) -> Verdict {
    let mut child: Child = command(&["serve", "--config-dir", dir, "--env", name], env, data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve runs");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(());
                return;
            }
        }
    });
    let verdict = match rx.recv_timeout(BOOT) {
        Ok(()) => Verdict::Valid,
        // Its output ended without "listening": it is exiting.
        Err(mpsc::RecvTimeoutError::Disconnected) => match child.wait().expect("wait").code() {
            Some(78) => Verdict::Refused,
            other => panic!("serve {dir} {name}: exited {other:?} instead of 78"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!("serve {dir} {name}: neither listening nor exited within {BOOT:?}")
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}

/// Every directory of environment files the suite ships or checks.
fn directories() -> Vec<String> {
    let mut dirs = vec!["environments".to_string(), "tests/fixtures/warnings".into()];
    for parent in ["tests/fixtures/invalid", "tests/fixtures/drift"] {
        let mut found: Vec<String> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    dirs
}

/// `(dir, environment, variables)` of every comparison: each environment without
/// secrets, and with the fake ones staging and production read.
fn cases() -> Vec<(String, String, BTreeMap<String, String>)> {
    let mut cases = Vec::new();
    for dir in directories() {
        let names = opts(&dir, BTreeMap::new())
            .environment_names()
            .unwrap_or_default();
        // A directory whose environment file cannot be parsed still has one to check.
        let names = if names.is_empty() {
            vec!["test".to_string()]
        } else {
            names
        };
        for name in names {
            for env in [BTreeMap::new(), fake_env()] {
                cases.push((dir.clone(), name.clone(), env));
            }
        }
    }
    cases
}

#[test]
fn check_and_serve_agree_on_every_fixture_and_shipped_environment() {
    let data = tempfile::tempdir().expect("data dir");
    let cases = cases();
    // Four at a time: each comparison is two short-lived processes.
    let verdicts: Vec<(String, Verdict, Verdict)> = std::thread::scope(|scope| {
        let chunks: Vec<_> = cases
            .chunks(cases.len().div_ceil(4))
            .map(|chunk| {
                let data = data.path();
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(dir, name, env)| {
                            let c = check(dir, name, env, data);
                            let s = serve(dir, name, env, data);
                            (format!("{dir} {name} ({} vars)", env.len()), c, s)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks
            .into_iter()
            .flat_map(|h| h.join().expect("no panic"))
            .collect()
    });
    let disagree: Vec<String> = verdicts
        .iter()
        .filter(|(_, c, s)| c != s)
        .map(|(what, c, s)| format!("{what}: check {c:?}, serve {s:?}"))
        .collect();
    assert!(
        disagree.is_empty(),
        "check and serve disagree:\n{}",
        disagree.join("\n")
    );
    let valid = verdicts
        .iter()
        .filter(|(_, c, _)| *c == Verdict::Valid)
        .count();
    assert!(
        verdicts.len() > 150,
        "only {} comparisons: fixtures not found?",
        verdicts.len()
    );
    assert!(
        valid > 10 && verdicts.len() - valid > 100,
        "{valid} of {} valid",
        verdicts.len()
    );
}
