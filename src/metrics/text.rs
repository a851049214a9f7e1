//! The Prometheus text format 0.0.4 from the OpenMetrics text `prometheus-client` writes.
//!
//! The two differ where it matters to a scraper: OpenMetrics names a counter family
//! without its `_total` suffix (`# TYPE portcullis_connections counter` over
//! `portcullis_connections_total`), has `# UNIT` lines and ends with `# EOF`. The 0.0.4
//! parser (Prometheus without OpenMetrics negotiation, promtool, most agents) wants the
//! `# HELP`/`# TYPE` names to be the sample names, so counters are renamed and the
//! OpenMetrics-only lines dropped.

/// Rewrites an OpenMetrics exposition as text format 0.0.4.
pub fn to_004(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_lines_go() {
        let om = "# HELP p_conns Connections.\n# TYPE p_conns counter\np_conns_total 3\n\
                  # HELP p_open Open.\n# TYPE p_open gauge\np_open 1\n\
                  # HELP p_secs Seconds.\n# TYPE p_secs histogram\n# UNIT p_secs seconds\n\
                  p_secs_sum 0.5\np_secs_count 1\np_secs_bucket{le=\"+Inf\"} 1\n# EOF\n";
        assert_eq!(
            to_004(om),
            "# HELP p_conns_total Connections.\n# TYPE p_conns_total counter\np_conns_total 3\n\
             # HELP p_open Open.\n# TYPE p_open gauge\np_open 1\n\
             # HELP p_secs Seconds.\n# TYPE p_secs histogram\n\
             p_secs_sum 0.5\np_secs_count 1\np_secs_bucket{le=\"+Inf\"} 1\n"
        );
    }
}
