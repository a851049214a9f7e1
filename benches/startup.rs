//! Startup cost, printed as median / min / max over a number of runs (no assertions:
//! timings depend on the machine):
//!
//! - `check --all` in-process on `environments/` with fake secrets;
//! - boot-to-listening of `portcullis serve --env test` as a subprocess: from spawn until
//!   `GET /health` answers 200, then SIGTERM;
//! - boot-to-ready of the embedded default (`serve --env development`, a new SQLite file
//!   each run, so migrations are included): from spawn until `GET /ready` answers 200.
//!
//! Run with `cargo bench --bench startup` (`-- --runs N` to change the run count).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis::cli::check::check_all;
use portcullis::config::load::LoadOptions;

const DEFAULT_RUNS: usize = 20;
/// Longest a boot may take before the bench gives up on it.
const BOOT_LIMIT: Duration = Duration::from_secs(30);

fn main() {
    let runs = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("startup bench, {runs} runs each");
    report("check --all (in-process)", &time_check_all(root, runs));
    report(
        "serve --env test: spawn to GET /health 200",
        &time_boot(root, runs, "test", "/health"),
    );
    report(
        "serve --env development: spawn to GET /ready 200",
        &time_boot(root, runs, "development", "/ready"),
    );
}

fn fake_env() -> BTreeMap<String, String> {
    [
        (
            "PORTCULLIS_JWT_SECRET",
            "bench-jwt-secret-0123456789abcdef-0123456789",
        ),
        ("PORTCULLIS_BYPASS_SECRET", "bench-bypass-secret-0123456789"),
        (
            "PORTCULLIS_DATABASE_URL",
            "postgres://portcullis@db.internal:5432/portcullis",
        ),
        ("PORTCULLIS_REDIS_URL", "redis://redis.internal:6379"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn time_check_all(root: &Path, runs: usize) -> Vec<Duration> {
    let opts = LoadOptions::new(root.join("environments"), fake_env());
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let (outcomes, drift) = check_all(&opts).expect("environments/ is readable");
            let elapsed = start.elapsed();
            assert!(
                outcomes.iter().all(|o| o.report.is_ok()) && drift.is_ok(),
                "the shipped environments must be valid with the fake secrets"
            );
            elapsed
        })
        .collect()
}

/// The binary cargo built for this bench (release profile under `cargo bench`).
fn binary(root: &Path) -> PathBuf {
    option_env!("CARGO_BIN_EXE_portcullis")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/portcullis"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn time_boot(root: &Path, runs: usize, env: &str, probe: &'static str) -> Vec<Duration> {
    let bin = binary(root);
    let data = tempfile::tempdir().expect("a temporary directory");
    (0..runs)
        .map(|i| {
            let port = free_port();
            let db = data.path().join(format!("boot-{i}.db"));
            let start = Instant::now();
            let mut child = Command::new(&bin)
                .args(["serve", "--env", env, "--config-dir"])
                .arg(root.join("environments"))
                .current_dir(root)
                .env_clear()
                .env("PORTCULLIS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
                .env(
                    "PORTCULLIS_SERVICES__DATABASE__URL",
                    format!("sqlite://{}", db.display()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the portcullis binary starts");
            let ready = wait_for(&mut child, port, probe, start);
            terminate(&mut child);
            ready
        })
        .collect()
}

/// Polls `GET <probe>` until it answers 200; the time is taken from `start`.
fn wait_for(child: &mut Child, port: u16, probe: &str, start: Instant) -> Duration {
    loop {
        if answers_200(port, probe) {
            return start.elapsed();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve exited with {status} before answering {probe}");
        }
        if start.elapsed() > BOOT_LIMIT {
            let _ = child.kill();
            panic!("serve did not answer {probe} within {BOOT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn answers_200(port: u16, probe: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {probe} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// SIGTERM (graceful shutdown, as in production), then wait; SIGKILL if it lingers.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("serve ignored SIGTERM for 10 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    };
    println!(
        "{what:<45} median {:>9.3} ms  min {:>9.3} ms  max {:>9.3} ms  (n = {n})",
        ms(median),
        ms(sorted[0]),
        ms(sorted[n - 1])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
