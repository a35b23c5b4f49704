//! Lexical rules of the Prometheus text format 0.0.4: escaping, value formatting and
//! legal names.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Appends `help` escaped for a `# HELP` line: `\` → `\\`, newline → `\n`.
pub(crate) fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `value` escaped for a label value: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub(crate) fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a sample value as Prometheus parses it: `NaN`, `+Inf`, `-Inf`, integers
/// without a fraction (`3`), anything else in Rust's shortest round-trip form (`0.1`,
/// `1e-7`, `1.5e300`), which Go's `ParseFloat` reads back exactly.
pub(crate) fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == v.trunc() && v.abs() < 1e16 {
        // Exact: every integer below 2^53 converts to i64 without loss.
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// A value formatted by [`format_value`].
pub(crate) fn value_string(v: f64) -> String {
    let mut s = String::new();
    format_value(v, &mut s);
    s
}

/// `name` as a legal label name (`[a-zA-Z_][a-zA-Z0-9_]*`, the model's
/// `sanitize_label_name`). Names validated at ingest come back unchanged, unallocated.
pub(crate) fn label_name(name: &str) -> Cow<'_, str> {
    let legal = name
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit()));
    if legal && !name.is_empty() {
        return Cow::Borrowed(name);
    }
    Cow::Owned(datanexus_model::event::sanitize_label_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(s: &str) -> String {
        let mut out = String::new();
        escape_help(s, &mut out);
        out
    }

    fn label(s: &str) -> String {
        let mut out = String::new();
        escape_label_value(s, &mut out);
        out
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        assert_eq!(help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"");
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(label("C:\\tmp \"x\"\ny"), "C:\\\\tmp \\\"x\\\"\\ny");
        assert_eq!(label("ünïcode ✓"), "ünïcode ✓");
    }

    #[test]
    fn values_use_prometheus_spellings_and_shortest_forms() {
        let cases = [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (3.0, "3"),
            (-2.0, "-2"),
            (-0.0, "0"),
            (0.1, "0.1"),
            (75.5, "75.5"),
            (1e-7, "1e-7"),
            (1.5e300, "1.5e300"),
            (1e15, "1000000000000000"),
            (1e16, "1e16"),
            (123_456_789_012_345.0, "123456789012345"),
        ];
        for (v, want) in cases {
            assert_eq!(value_string(v), want, "{v}");
        }
    }

    #[test]
    fn formatted_values_round_trip() {
        for v in [0.1 + 0.2, 1.0 / 3.0, f64::MAX, f64::MIN_POSITIVE, 2.5e-310] {
            assert_eq!(value_string(v).parse::<f64>(), Ok(v));
        }
    }

    #[test]
    fn label_names_are_made_legal() {
        assert_eq!(label_name("host"), "host");
        assert_eq!(label_name("_x9"), "_x9");
        assert_eq!(label_name("9x"), "_9x");
        assert_eq!(label_name("a-b.c"), "a_b_c");
        assert_eq!(label_name(""), "_");
    }
}
