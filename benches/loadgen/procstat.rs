//! Reading a process's CPU time and resident memory from /proc, and raising our own fd
//! limit. Server CPU per operation is the figure that matters on a 2-core machine, where
//! the load generator itself may be the bottleneck for throughput.

use std::sync::Mutex;

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy)]
pub struct ProcSnap {
    /// utime + stime of all threads, in clock ticks (10 ms each, typically).
    pub cpu_ticks: u64,
    /// Run time of the live threads in nanoseconds, from `task/*/schedstat`; far finer than
    /// ticks, but it forgets threads that exit, so it is only used when it did not shrink.
    pub cpu_ns_sched: Option<u64>,
    pub rss_kb: u64,
}

fn sched_ns(pid: &str) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// `pid` is a number or `"self"`.
pub fn snapshot(pid: &str) -> std::io::Result<ProcSnap> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' index 0 is field 3 (state), so utime (14) and stime (15) are 11 and 12.
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(ProcSnap {
        cpu_ticks: num(11) + num(12),
        cpu_ns_sched: sched_ns(pid),
        rss_kb,
    })
}

/// Clock ticks per second, and whether it had to be assumed.
pub fn clk_tck() -> (u64, bool) {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        (t as u64, false)
    } else {
        (100, true)
    }
}

/// CPU time and RSS of one process across a workload.
pub struct Watch {
    pid: String,
    before: Mutex<Option<ProcSnap>>,
}

impl Watch {
    pub fn start(pid: &str) -> Watch {
        Watch {
            pid: pid.to_owned(),
            before: Mutex::new(snapshot(pid).ok()),
        }
    }

    /// Restarts the CPU measurement, e.g. once a workload's connections are open.
    pub fn restart(&self) {
        *self.before.lock().unwrap_or_else(|e| e.into_inner()) = self.now();
    }

    pub fn now(&self) -> Option<ProcSnap> {
        snapshot(&self.pid).ok()
    }

    /// JSON report; `ops` is the number of completed operations CPU time is divided by.
    pub fn finish(&self, ops: u64) -> Value {
        let before = *self.before.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(before), Some(after)) = (before, self.now()) else {
            return json!({"pid": self.pid, "error": "cannot read /proc"});
        };
        let (tck, assumed) = clk_tck();
        let tick_us = after.cpu_ticks.saturating_sub(before.cpu_ticks) * 1_000_000 / tck;
        let sched_us = match (before.cpu_ns_sched, after.cpu_ns_sched) {
            (Some(b), Some(a)) if a >= b => Some((a - b) / 1000),
            _ => None,
        };
        let (cpu_us, source) = match sched_us {
            Some(us) => (us, "schedstat"),
            None => (tick_us, "stat_ticks"),
        };
        json!({
            "pid": self.pid,
            "cpu_ms": cpu_us as f64 / 1000.0,
            "cpu_ms_ticks": tick_us as f64 / 1000.0,
            "cpu_source": source,
            "cpu_us_per_op": if ops > 0 { cpu_us as f64 / ops as f64 } else { 0.0 },
            "rss_kb_before": before.rss_kb,
            "rss_kb_after": after.rss_kb,
            "clk_tck": tck,
            "clk_tck_assumed": assumed,
        })
    }
}

/// Raises the soft fd limit to the hard one; returns (soft, hard) afterwards.
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit/setrlimit to use.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}
