//! `summarize`: the median of every numeric field of `SUMMARY {json}` lines, grouped by
//! workload, so `compare.sh` needs no other tool to aggregate repeated runs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

pub fn run(files: &[PathBuf]) -> ExitCode {
    let mut text = String::new();
    if files.is_empty() && std::io::stdin().read_to_string(&mut text).is_err() {
        eprintln!("cannot read stdin");
        return ExitCode::FAILURE;
    }
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => text.push_str(&t),
            Err(e) => {
                eprintln!("cannot read {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        }
    }
    // workload -> field path -> values
    let mut by: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        let Some(js) = line.strip_prefix("SUMMARY ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(js) else {
            continue;
        };
        let w = v["workload"].as_str().unwrap_or("unknown").to_owned();
        *runs.entry(w.clone()).or_insert(0) += 1;
        let fields = by.entry(w).or_default();
        flatten("", &v, fields);
    }
    for (w, fields) in by {
        println!("== {w}: median of {} run(s)", runs[&w]);
        for (path, mut vals) in fields {
            vals.sort_by(f64::total_cmp);
            let med = if vals.len() % 2 == 1 {
                vals[vals.len() / 2]
            } else {
                (vals[vals.len() / 2 - 1] + vals[vals.len() / 2]) / 2.0
            };
            println!("  {path:<44} {med:>14.2}   (n={})", vals.len());
        }
    }
    ExitCode::SUCCESS
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Vec<f64>>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        // Identifiers and limits are not measurements.
        Value::Number(n)
            if !(prefix.ends_with("pid")
                || prefix.starts_with("fd_limit")
                || prefix.ends_with("clk_tck")) =>
        {
            out.entry(prefix.to_owned()).or_default().extend(n.as_f64());
        }
        _ => {}
    }
}
