use datanexus_model::{FieldValue, Labels, MetricType, Point};
use datanexus_store::{Latest, Sample, SeriesKey};

use super::*;

const BOUNDS: [f64; 3] = [1.0, 2.5, 10.0];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
    .unwrap()
}

fn sample(ts_ms: i64, value: f64) -> Sample {
    Sample {
        timestamp_ns: ts_ms * 1_000_000,
        value,
    }
}

fn latest(name: &str, l: &[(&str, &str)], kind: MetricType, ts_ms: i64, v: f64) -> Latest {
    Latest {
        key: SeriesKey {
            measurement: name.into(),
            field: "value".into(),
            labels: labels(l),
        },
        kind,
        help: None,
        sample: sample(ts_ms, v),
    }
}

fn render_latest(items: &[Latest]) -> Rendered {
    let mut families = Families::default();
    for l in items {
        families.push_latest(l);
    }
    render(&families.finish(), &BOUNDS)
}

fn observations(name: &str, kind: MetricType, values: &[f64]) -> Vec<Family> {
    let mut families = Families::default();
    for (i, v) in (1..).zip(values) {
        let p =
            Point::sample(name, labels(&[("path", "/a")]), *v, i * 1_000_000_000).with_kind(kind);
        families.push_point(&p);
    }
    families.finish()
}

#[test]
fn renders_help_type_and_latest_sample_with_millisecond_timestamp() {
    let mut cpu = latest(
        "cpu_usage",
        &[("host", "a")],
        MetricType::Gauge,
        1_700_000_000_123,
        75.5,
    );
    cpu.help = Some("CPU usage in percent".into());
    let out = render_latest(&[cpu]);
    assert_eq!(
        out.text,
        "# HELP cpu_usage CPU usage in percent\n\
         # TYPE cpu_usage gauge\n\
         cpu_usage{host=\"a\"} 75.5 1700000000123\n"
    );
    assert!(out.dropped.is_empty());
}

#[test]
fn families_without_help_get_the_default_and_no_labels_means_no_braces() {
    let out = render_latest(&[latest("up", &[], MetricType::Untyped, 5, 1.0)]);
    assert_eq!(
        out.text,
        format!("# HELP up {DEFAULT_HELP}\n# TYPE up untyped\nup 1 5\n")
    );
}

#[test]
fn help_and_label_values_are_escaped() {
    let mut m = latest(
        "files",
        &[("path", "C:\\dir \"x\"\nnext")],
        MetricType::Gauge,
        1,
        2.0,
    );
    m.help = Some("line one\nback\\slash".into());
    let text = render_latest(&[m]).text;
    assert!(
        text.contains("# HELP files line one\\nback\\\\slash\n"),
        "{text}"
    );
    assert!(
        text.contains("files{path=\"C:\\\\dir \\\"x\\\"\\nnext\"} 2 1\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn families_are_sorted_by_name_and_series_by_label_set_whatever_the_input_order() {
    let items = [
        latest("zeta", &[], MetricType::Gauge, 1, 1.0),
        latest("alpha", &[("b", "1")], MetricType::Gauge, 1, 1.0),
        latest("alpha", &[("a", "2")], MetricType::Gauge, 1, 1.0),
        latest(
            "alpha",
            &[("a", "1"), ("b", "0")],
            MetricType::Gauge,
            1,
            1.0,
        ),
    ];
    let forward = render_latest(&items).text;
    let mut reversed_items = items.to_vec();
    reversed_items.reverse();
    assert_eq!(render_latest(&reversed_items).text, forward);
    let samples: Vec<&str> = forward.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        samples,
        [
            "alpha{a=\"1\",b=\"0\"} 1 1",
            "alpha{a=\"2\"} 1 1",
            "alpha{b=\"1\"} 1 1",
            "zeta 1 1"
        ]
    );
    assert_eq!(forward.matches("# HELP alpha").count(), 1);
    assert_eq!(forward.matches("# TYPE alpha").count(), 1);
}

#[test]
fn counters_get_a_total_suffix_once() {
    let text = render_latest(&[
        latest("requests", &[], MetricType::Counter, 1, 3.0),
        latest("bytes_total", &[], MetricType::Counter, 1, 9.0),
    ])
    .text;
    assert!(
        text.contains("# TYPE requests_total counter\nrequests_total 3 1\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE bytes_total counter\nbytes_total 9 1\n"),
        "{text}"
    );
    assert!(!text.contains("total_total"), "{text}");
}

#[test]
fn non_value_fields_are_exposed_as_measurement_underscore_field() {
    let p = Point {
        measurement: "disk".into(),
        labels: labels(&[("dev", "sda")]),
        fields: vec![
            ("free".into(), FieldValue::I64(10)),
            ("ok".into(), FieldValue::Bool(true)),
            ("model".into(), FieldValue::Str("x".into())),
            ("used-pct".into(), FieldValue::F64(0.5)),
        ],
        timestamp_ns: 2_000_000,
        kind: MetricType::Gauge,
        help: None,
    };
    let mut families = Families::default();
    families.push_point(&p);
    let text = render(&families.finish(), &BOUNDS).text;
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        samples,
        [
            "disk_free{dev=\"sda\"} 10 2",
            "disk_ok{dev=\"sda\"} 1 2",
            "disk_used_pct{dev=\"sda\"} 0.5 2"
        ]
    );
}

#[test]
fn histograms_expose_cumulative_buckets_sum_and_count() {
    let families = observations(
        "latency",
        MetricType::Histogram,
        &[0.5, 2.0, 2.0, 7.0, 50.0],
    );
    let text = render(&families, &BOUNDS).text;
    let expected = "# TYPE latency histogram\n\
        latency_bucket{path=\"/a\",le=\"1\"} 1 5000\n\
        latency_bucket{path=\"/a\",le=\"2.5\"} 3 5000\n\
        latency_bucket{path=\"/a\",le=\"10\"} 4 5000\n\
        latency_bucket{path=\"/a\",le=\"+Inf\"} 5 5000\n\
        latency_sum{path=\"/a\"} 61.5 5000\n\
        latency_count{path=\"/a\"} 5 5000\n";
    assert!(text.ends_with(expected), "{text}");
}

#[test]
fn histogram_buckets_come_out_sorted_even_from_unsorted_bounds() {
    let families = observations("latency", MetricType::Histogram, &[3.0]);
    let text = render(&families, &[10.0, 1.0, 1.0, f64::NAN]).text;
    let les: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("le=\"").nth(1))
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(les, ["1", "10", "+Inf"]);
}

#[test]
fn summaries_expose_quantiles_sum_and_count() {
    let families = observations("rpc", MetricType::Summary, &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let text = render(&families, &BOUNDS).text;
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        samples,
        [
            "rpc{path=\"/a\",quantile=\"0.5\"} 3 5000",
            "rpc{path=\"/a\",quantile=\"0.9\"} 4.6 5000",
            "rpc{path=\"/a\",quantile=\"0.99\"} 4.96 5000",
            "rpc_sum{path=\"/a\"} 15 5000",
            "rpc_count{path=\"/a\"} 5 5000"
        ]
    );
}

#[test]
fn precomputed_observations_are_rendered_as_given() {
    let summary = Summary {
        count: 0,
        sum: 0.0,
        quantiles: SUMMARY_QUANTILES.iter().map(|q| (*q, None)).collect(),
        ..Summary::default()
    };
    let family = Family {
        measurement: "empty".into(),
        field: "value".into(),
        kind: MetricType::Summary,
        help: None,
        series: vec![Series {
            labels: Labels::empty(),
            value: SeriesValue::Observed {
                summary,
                timestamp_ns: 7_000_000,
            },
        }],
    };
    let text = render(&[family], &BOUNDS).text;
    assert!(text.contains("empty{quantile=\"0.5\"} NaN 7\n"), "{text}");
    assert!(text.contains("empty_count 0 7\n"), "{text}");
}

#[test]
fn reserved_le_and_quantile_labels_are_exported() {
    let mut families = Families::default();
    let p = Point::sample("h", labels(&[("le", "x")]), 1.0, 0).with_kind(MetricType::Histogram);
    families.push_point(&p);
    let text = render(&families.finish(), &[]).text;
    assert!(
        text.contains("h_bucket{exported_le=\"x\",le=\"+Inf\"} 1 0\n"),
        "{text}"
    );
    assert!(text.contains("h_sum{exported_le=\"x\"} 1 0\n"), "{text}");
    assert!(text.contains("h_count{exported_le=\"x\"} 1 0\n"), "{text}");
}

#[test]
fn a_family_takes_kind_and_help_of_its_newest_sample() {
    let mut old = latest("m", &[("s", "1")], MetricType::Counter, 1, 1.0);
    old.help = Some("old help".into());
    let new = latest("m", &[("s", "2")], MetricType::Gauge, 2, 2.0);
    let text = render_latest(&[new, old]).text;
    assert!(
        text.starts_with("# HELP m old help\n# TYPE m gauge\n"),
        "{text}"
    );
}

#[test]
fn drained_samples_of_one_series_are_rendered_in_time_order_without_duplicates() {
    let mut families = Families::default();
    for (ts, v) in [(3, 30.0), (1, 10.0), (2, 20.0), (3, 31.0)] {
        families.push_point(&Point::sample("g", Labels::empty(), v, ts * 1_000_000));
    }
    let text = render(&families.finish(), &BOUNDS).text;
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(samples, ["g 10 1", "g 20 2", "g 31 3"]);
}

#[test]
fn colliding_names_render_one_family_and_report_the_others() {
    let mut field_b = latest("a", &[], MetricType::Gauge, 1, 2.0);
    field_b.key.field = "b".into();
    let items = [
        field_b,
        latest("a_b", &[], MetricType::Gauge, 1, 1.0),
        latest("x", &[], MetricType::Counter, 1, 5.0),
        latest("x_total", &[], MetricType::Gauge, 1, 6.0),
        latest("lat", &[], MetricType::Histogram, 1, 0.2),
        latest("lat_sum", &[], MetricType::Gauge, 1, 9.0),
        latest("lat_sum_other", &[], MetricType::Gauge, 1, 9.0),
    ];
    let out = render_latest(&items);
    assert_eq!(out.text.matches("# TYPE a_b ").count(), 1, "{}", out.text);
    assert!(
        out.text.contains("a_b 1 1\n"),
        "the `value` field wins: {}",
        out.text
    );
    assert!(
        out.text.contains("# TYPE x_total counter\nx_total 5 1\n"),
        "{}",
        out.text
    );
    assert!(!out.text.contains("# TYPE lat_sum gauge"), "{}", out.text);
    assert!(
        out.text.contains("# TYPE lat_sum_other gauge"),
        "{}",
        out.text
    );
    assert_eq!(
        out.dropped,
        [
            "a/b as a_b",
            "lat_sum/value as lat_sum",
            "x_total/value as x_total"
        ]
    );
}

#[test]
fn nothing_to_render_is_an_empty_body() {
    assert_eq!(render(&[], &BOUNDS), Rendered::default());
}
