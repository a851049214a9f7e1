//! The deploy artifacts, checked as far as this machine allows (there is no Docker engine
//! here, so the image itself is not built): every `COPY` source of `deploy/Dockerfile`
//! exists, the image runs as the unprivileged user it names and the binary works as that
//! user; `deploy/portcullis.service` passes `systemd-analyze verify` with no warning and
//! carries its hardening options. `deploy/nginx.conf` is run by `proxy.rs`.

use std::path::Path;
use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

fn dockerfile() -> String {
    std::fs::read_to_string("deploy/Dockerfile").expect("deploy/Dockerfile")
}

/// Instructions with their arguments, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        current.push(' ');
        if !line.ends_with('\\') {
            let (op, args) = current
                .trim()
                .split_once(' ')
                .unwrap_or((current.trim(), ""));
            out.push((op.to_uppercase(), args.trim().to_owned()));
            current.clear();
        }
    }
    out
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

#[test]
fn dockerfile_copies_what_exists_and_runs_unprivileged() {
    let steps = instructions(&dockerfile());
    let stages = steps.iter().filter(|(op, _)| op == "FROM").count();
    assert!(stages >= 2, "multi-stage: build and runtime");
    for (op, args) in &steps {
        if op != "COPY" || args.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                Path::new(source).exists(),
                "COPY source `{source}` does not exist"
            );
        }
    }
    let runtime = steps.iter().rposition(|(op, _)| op == "FROM").unwrap();
    let runtime = &steps[runtime..];
    let user = runtime
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, u)| u.clone())
        .expect("the runtime stage names a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert_ne!(uid, 0, "the image must not run as root");
    let copied = runtime
        .iter()
        .find(|(op, args)| op == "COPY" && args.contains("target/release/portcullis"))
        .map(|(_, args)| args.split_whitespace().last().unwrap().to_owned())
        .expect("the binary is copied from the build stage");
    let entry = runtime
        .iter()
        .find(|(op, _)| op == "ENTRYPOINT")
        .map(|(_, args)| args.clone())
        .expect("ENTRYPOINT");
    assert!(entry.contains(&copied), "{entry} runs {copied}");
    let installs = runtime
        .iter()
        .any(|(op, a)| op == "RUN" && a.contains("ca-certificates"));
    assert!(installs, "the JWKS client needs the system CA store");

    // The binary checks the shipped environments as that uid (as the image runs it).
    let mut command = match is_root() {
        true => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--"])
                .arg(BINARY);
            c
        }
        // Not root: the test already runs unprivileged.
        false => Command::new(BINARY),
    };
    let out = command
        .args([
            "check",
            "--config-dir",
            "environments",
            "--env",
            "development",
        ])
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "as uid {uid}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_verifies_cleanly_and_is_hardened() {
    let unit = std::fs::read_to_string("deploy/portcullis.service").expect("unit file");
    // `verify` checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/portcullis", BINARY)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    let settings: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    for key in [
        "User",
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "RestrictAddressFamilies",
        "RestrictNamespaces",
        "MemoryDenyWriteExecute",
        "SystemCallFilter",
        "RestartPreventExitStatus",
        "ExecReload",
    ] {
        assert!(
            settings.contains(&key),
            "deploy/portcullis.service lacks {key}="
        );
    }
    assert!(
        unit.contains("RestartPreventExitStatus=78"),
        "exit 78 is a config error"
    );
}
