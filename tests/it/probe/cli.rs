//! The binaries: the issue's done-when command against the embedded default (`serve`
//! from a directory without `environments/`, then `probe … --chat … --resume` exits 0),
//! a failure in JSON with exit 1, and bad usage with exit 2.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

fn portcullis(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// `serve` with no flags (the embedded default) on a free port; returns the child and
/// `host:port` from its "listening" log line.
fn serve_embedded(dir: &Path) -> (Child, String) {
    let mut child = portcullis(dir, &["serve"])
        .env("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    let mut addr = None;
    let mut connected = false;
    let address = regex::Regex::new(r"127\.0\.0\.1:\d+").unwrap();
    for line in stdout.lines().map_while(Result::ok) {
        if line.contains("listening") {
            let found = address.find(&line).map(|m| m.as_str().to_string());
            addr = found;
        }
        connected |= line.contains("store connected");
        seen.push(line);
        if addr.is_some() && connected {
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no listening line: {}", seen.join("\n")));
    (child, addr)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_done_when_command_passes_against_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve_embedded(dir.path());
    let base = format!("http://{addr}");
    let args = [
        "probe",
        &base,
        "--env",
        "development",
        "--sub",
        "alice",
        "--chat",
        "what is 12*7?",
        "--resume",
    ];
    let out = portcullis(dir.path(), &args).output().expect("probe runs");
    let failed = portcullis(
        dir.path(),
        &[
            "probe",
            &format!("ws://{addr}/api/v1/websocket"),
            "--format",
            "json",
        ],
    )
    .output()
    .expect("probe runs");
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = text(&out);
    for stage in [
        "resolve",
        "tcp",
        "client_config",
        "http",
        "upgrade",
        "subprotocol",
        "established",
        "ping",
        "chat",
        "resume",
    ] {
        assert!(
            said.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(stage)),
            "{stage}: {said}"
        );
    }
    assert!(said.contains("84"), "{said}");
    assert!(said.contains("ok: all 10 stages passed"), "{said}");

    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let json: Value = serde_json::from_slice(&failed.stdout).expect("JSON on stdout");
    assert_eq!(json["failed_stage"], "http", "{json}");
    assert_eq!(json["ok"], false);
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["probe", "ftp://example.com/"][..],
        &["probe", "ws://127.0.0.1:9/websocket", "--resume"],
        &[
            "probe",
            "ws://127.0.0.1:9/websocket",
            "--env",
            "development",
        ],
        &[
            "probe",
            "ws://127.0.0.1:9/websocket",
            "--env",
            "production",
            "--sub",
            "alice",
        ],
    ] {
        let out = portcullis(dir.path(), args).output().expect("probe runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
}
