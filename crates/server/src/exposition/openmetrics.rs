//! OpenMetrics text (what `prometheus-client` writes, and what `Telemetry::encode`
//! returns) converted to the text format 0.0.4, which `GET /internal/metrics` serves:
//!
//! - a counter family `x` whose samples are `x_total` is declared as `x_total` (0.0.4
//!   parsers match samples to families by name; otherwise `x_total` would be a family
//!   without HELP and TYPE);
//! - type `unknown` is `untyped`;
//! - `# UNIT` and `# EOF` lines are dropped;
//! - `\"` in HELP text (an OpenMetrics escape only) becomes `"`.

use std::collections::HashSet;

/// Converts OpenMetrics `text` to the text format 0.0.4.
pub(crate) fn to_text_format(text: &str) -> String {
    let counters: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let rename = |name: &str| {
        if counters.contains(name) {
            format!("{name}_total")
        } else {
            name.to_owned()
        }
    };
    let mut out = String::with_capacity(text.len() + 16 * counters.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!(
                "# HELP {} {}",
                rename(name),
                help.replace("\\\"", "\"")
            ));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = if kind == "unknown" { "untyped" } else { kind };
            out.push_str(&format!("# TYPE {} {kind}", rename(name)));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_declared_under_their_sample_name() {
        let om = "# HELP app_requests Requests.\n# TYPE app_requests counter\n\
                  app_requests_total{api=\"x\"} 3\n# HELP app_depth Depth.\n\
                  # TYPE app_depth gauge\napp_depth 1\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\n\
             app_requests_total{api=\"x\"} 3\n# HELP app_depth Depth.\n\
             # TYPE app_depth gauge\napp_depth 1\n"
        );
    }

    #[test]
    fn openmetrics_only_syntax_is_translated_or_dropped() {
        let om = "# HELP t A \\\"quoted\\\" help.\n# TYPE t unknown\n# UNIT t seconds\nt 1\n";
        assert_eq!(
            to_text_format(om),
            "# HELP t A \"quoted\" help.\n# TYPE t untyped\nt 1\n"
        );
    }

    #[test]
    fn counters_already_named_total_are_left_alone() {
        let om = "# TYPE done_total counter\ndone_total 1\n";
        assert_eq!(to_text_format(om), om);
    }
}
