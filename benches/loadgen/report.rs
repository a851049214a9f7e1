//! Latency samples, counters and the two output forms: a human table and the single
//! machine-readable `SUMMARY {json}` line that `compare.sh` parses.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

/// Counters by kind (error kinds, violation kinds).
pub type Counts = BTreeMap<String, u64>;

pub fn bump(c: &mut Counts, key: impl Into<String>) {
    *c.entry(key.into()).or_insert(0) += 1;
}

pub fn merge(into: &mut Counts, from: Counts) {
    for (k, v) in from {
        *into.entry(k).or_insert(0) += v;
    }
}

/// Latency samples in microseconds.
#[derive(Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros() as u64);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// count, mean, p50, p90, p99, max (nearest-rank percentiles), in microseconds.
    pub fn summary(&mut self) -> Value {
        self.0.sort_unstable();
        let s = &self.0;
        let pct = |p: f64| -> u64 {
            if s.is_empty() {
                return 0;
            }
            let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
            s[rank.clamp(1, s.len()) - 1]
        };
        let mean = if s.is_empty() {
            0
        } else {
            s.iter().sum::<u64>() / s.len() as u64
        };
        json!({
            "count": s.len(), "mean": mean, "p50": pct(50.0), "p90": pct(90.0),
            "p99": pct(99.0), "max": s.last().copied().unwrap_or(0),
        })
    }
}

/// Prints the summary as an indented table, then the `SUMMARY` line.
pub fn emit(summary: &Value) {
    println!("{:-<64}", "");
    println!(
        "workload {} against {}: {} {}(s) in {:.2} s",
        summary["workload"].as_str().unwrap_or("?"),
        summary["url"].as_str().unwrap_or("?"),
        summary["ops"],
        summary["op"].as_str().unwrap_or("op"),
        summary["wall_s"].as_f64().unwrap_or(0.0)
    );
    print_table(summary, 0);
    println!("{:-<64}", "");
    println!("SUMMARY {summary}");
}

fn print_table(v: &Value, depth: usize) {
    let Value::Object(map) = v else { return };
    for (k, v) in map {
        let pad = "  ".repeat(depth);
        match v {
            Value::Object(m) if m.is_empty() => println!("{pad}{k:<30} (none)"),
            Value::Object(_) => {
                println!("{pad}{k}:");
                print_table(v, depth + 1);
            }
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => println!("{pad}{k:<30} {f:.2}"),
                _ => println!("{pad}{k:<30} {n}"),
            },
            other => println!("{pad}{k:<30} {other}"),
        }
    }
}

pub fn per_sec(count: u64, wall: Duration) -> f64 {
    let s = wall.as_secs_f64();
    if s > 0.0 { count as f64 / s } else { 0.0 }
}
