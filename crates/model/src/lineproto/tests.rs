use super::*;

const NOW: i64 = 1_700_000_000_000_000_000;

fn parse_ok(body: &str) -> Vec<Point> {
    parse(body, Precision::Nanoseconds, NOW, &Limits::default()).expect("parses")
}

fn one(body: &str) -> Point {
    let mut points = parse_ok(body);
    assert_eq!(points.len(), 1, "{points:?}");
    points.remove(0)
}

fn error(body: &str) -> LineError {
    parse(body, Precision::Nanoseconds, NOW, &Limits::default()).expect_err("rejected")
}

fn field(p: &Point, name: &str) -> FieldValue {
    p.fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no field {name:?} in {p:?}"))
}

#[test]
fn a_full_line_becomes_one_point_with_all_fields_and_tags_as_labels() {
    let p = one("cpu,host=a,region=eu value=1.5,idle=2i 1700000000000000001");
    assert_eq!(p.measurement, "cpu");
    assert_eq!(
        p.labels.iter().collect::<Vec<_>>(),
        vec![("host", "a"), ("region", "eu")]
    );
    assert_eq!(
        p.fields,
        vec![
            ("value".to_owned(), FieldValue::F64(1.5)),
            ("idle".to_owned(), FieldValue::I64(2)),
        ]
    );
    assert_eq!(p.timestamp_ns, 1_700_000_000_000_000_001);
    assert_eq!(p.kind, MetricType::Untyped);
}

#[test]
fn every_field_type_is_parsed() {
    let p = one(r#"m a=1,b=1.5,c=-1e3,d=-7i,e=7u,s="hi",g=+2"#);
    assert_eq!(field(&p, "a"), FieldValue::F64(1.0));
    assert_eq!(field(&p, "b"), FieldValue::F64(1.5));
    assert_eq!(field(&p, "c"), FieldValue::F64(-1000.0));
    assert_eq!(field(&p, "d"), FieldValue::I64(-7));
    assert_eq!(field(&p, "e"), FieldValue::U64(7));
    assert_eq!(field(&p, "s"), FieldValue::Str("hi".into()));
    assert_eq!(field(&p, "g"), FieldValue::F64(2.0));
    assert_eq!(
        field(&one("m u=18446744073709551615u"), "u"),
        FieldValue::U64(u64::MAX)
    );
}

#[test]
fn every_boolean_spelling_is_accepted() {
    for t in ["t", "T", "true", "True", "TRUE"] {
        assert_eq!(
            field(&one(&format!("m b={t}")), "b"),
            FieldValue::Bool(true),
            "{t}"
        );
    }
    for f in ["f", "F", "false", "False", "FALSE"] {
        assert_eq!(
            field(&one(&format!("m b={f}")), "b"),
            FieldValue::Bool(false),
            "{f}"
        );
    }
    assert!(error("m b=tRUE").message.contains("\"tRUE\""));
}

#[test]
fn measurement_escapes_commas_and_spaces() {
    // The unescaped name is what is mapped to a legal metric name.
    assert_eq!(one(r"my\ cpu\,x v=1").measurement, "my_cpu_x");
    // `\=` is not an escape in a measurement: the backslash stays (and maps to `_`).
    assert_eq!(one(r"a\=b v=1").measurement, "a__b");
}

#[test]
fn tag_values_unescape_commas_equals_and_spaces() {
    let p = one(r"m,path=a\,b\=c\ d v=1");
    assert_eq!(p.labels.get("path"), Some("a,b=c d"));
    // Any other backslash is kept.
    assert_eq!(one(r"m,p=C:\dir v=1").labels.get("p"), Some(r"C:\dir"));
}

#[test]
fn tag_keys_unescape_commas_equals_and_spaces() {
    // Unescaped to `a b=c,d`, then mapped to a legal label name.
    let p = one(r"m,a\ b\=c\,d=1 v=1");
    assert_eq!(p.labels.get("a_b_c_d"), Some("1"));
}

#[test]
fn field_keys_unescape_commas_equals_and_spaces() {
    let p = one(r"m a\ b\=c\,d=1");
    assert_eq!(p.fields[0].0, "a b=c,d");
}

#[test]
fn string_values_unescape_quotes_and_backslashes_and_keep_separators() {
    let p = one(r#"m s="say \"hi\", a=b c\\d \n" 5"#);
    assert_eq!(
        field(&p, "s"),
        FieldValue::Str(r#"say "hi", a=b c\d \n"#.into())
    );
    assert_eq!(p.timestamp_ns, 5);
    assert_eq!(
        field(&one(r#"m s="""#), "s"),
        FieldValue::Str(String::new())
    );
}

#[test]
fn comments_blank_lines_and_crlf_are_skipped() {
    let points = parse_ok("# a comment\r\n\r\n  \ncpu v=1 10\r\n# another\r\nmem v=2 20\r\n\n");
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].measurement, "cpu");
    assert_eq!(points[1].timestamp_ns, 20);
    assert!(parse_ok("").is_empty());
    assert!(parse_ok("\n# only a comment\n").is_empty());
}

#[test]
fn missing_timestamps_are_now_plus_the_point_index() {
    let points = parse_ok("a v=1\n# skip\nb v=2\nc v=3 7\n");
    let stamps: Vec<i64> = points.iter().map(|p| p.timestamp_ns).collect();
    assert_eq!(stamps, vec![NOW, NOW + 1, 7]);
}

#[test]
fn timestamps_are_scaled_by_precision() {
    let cases = [
        (Precision::Nanoseconds, 5),
        (Precision::Microseconds, 5_000),
        (Precision::Milliseconds, 5_000_000),
        (Precision::Seconds, 5_000_000_000),
    ];
    for (precision, ns) in cases {
        let points = parse("m v=1 5", precision, NOW, &Limits::default()).expect("parses");
        assert_eq!(points[0].timestamp_ns, ns, "{precision:?}");
    }
    let big = format!("m v=1 {}", i64::MAX / 1_000);
    let e = parse(&big, Precision::Seconds, NOW, &Limits::default()).unwrap_err();
    assert!(e.message.contains("after 2262"), "{e}");
}

#[test]
fn precision_names_follow_influxdb() {
    assert_eq!(Precision::parse("ns"), Some(Precision::Nanoseconds));
    assert_eq!(Precision::parse("n"), Some(Precision::Nanoseconds));
    assert_eq!(Precision::parse("us"), Some(Precision::Microseconds));
    assert_eq!(Precision::parse("u"), Some(Precision::Microseconds));
    assert_eq!(Precision::parse("ms"), Some(Precision::Milliseconds));
    assert_eq!(Precision::parse("s"), Some(Precision::Seconds));
    assert_eq!(Precision::parse("h"), None);
}

#[test]
fn missing_fields_are_rejected() {
    assert!(error("cpu").message.contains("no fields"));
    assert!(error("cpu,host=a").message.contains("no fields"));
    assert!(error("cpu 1").message.contains("has no '='"));
    assert!(error("cpu v=").message.contains("missing field value"));
    assert!(error("cpu v=1,").message.contains("missing field key"));
    assert!(error("cpu =1").message.contains("missing field key"));
    assert!(error(",t=a v=1").message.contains("missing measurement"));
    assert!(error("cpu,t= v=1").message.contains("empty value"));
    assert!(error("cpu,t v=1").message.contains("tag \"t\" has no '='"));
}

#[test]
fn bad_numbers_are_rejected() {
    for bad in [
        "1.2.3",
        "1x",
        "inf",
        "NaN",
        "1.5i",
        "-1u",
        "99999999999999999999i",
        "e",
    ] {
        let e = error(&format!("m v={bad}"));
        assert!(e.message.contains(bad), "{bad}: {e}");
    }
    assert!(error("m v=1e999").message.contains("not finite"));
}

#[test]
fn unterminated_strings_are_rejected() {
    assert!(error(r#"m s="abc"#).message.contains("unterminated"));
    assert!(error(r#"m s="abc\""#).message.contains("unterminated"));
    assert!(error(r#"m s="abc"x"#).message.contains("closing quote"));
}

#[test]
fn bad_timestamps_are_rejected() {
    for bad in ["abc", "1.5", "-1", "1 2", "99999999999999999999"] {
        let e = error(&format!("m v=1 {bad}"));
        assert!(e.message.contains("invalid timestamp"), "{bad}: {e}");
    }
}

#[test]
fn duplicate_tags_and_fields_are_rejected() {
    assert!(
        error("m,a=1,a=2 v=1")
            .message
            .contains("duplicate label name \"a\"")
    );
    assert!(
        error("m v=1,v=2")
            .message
            .contains("duplicate field name \"v\"")
    );
}

#[test]
fn names_influxdb_accepts_are_mapped_to_legal_ones() {
    // What Telegraf sends: spaces, dots and dashes in measurements and tag keys.
    let p = one(r"my\ measurement,tag\ key=tag\ value value=1");
    assert_eq!(p.measurement, "my_measurement");
    assert_eq!(p.labels.get("tag_key"), Some("tag value"));
    assert_eq!(one("disk.io,host=a value=1").measurement, "disk_io");
    assert_eq!(one("9cpu v=1").measurement, "_9cpu");
    let p = one("m,host-name=a,__name__=b v=1");
    assert_eq!(p.labels.get("host_name"), Some("a"));
    assert_eq!(p.labels.get("_name__"), Some("b"));
    // Two keys that map to one label: the later value wins.
    let p = one("m,a.b=1,a-b=2 v=1");
    assert_eq!(p.labels.len(), 1);
    assert_eq!(p.labels.get("a_b"), Some("2"));
}

#[test]
fn the_first_bad_line_is_named_and_the_body_rejected() {
    let e = error("# c\na v=1\n\nb v=oops\nc v=3\n9d v=4");
    assert_eq!(e.line, 4);
    assert!(e.to_string().starts_with("line 4: "), "{e}");
}

#[test]
fn many_lines_parse_in_order() {
    let body: String = (0..10_000)
        .map(|i| format!("m,i=x{} v={i}i {i}\n", i % 7))
        .collect();
    let points = parse_ok(&body);
    assert_eq!(points.len(), 10_000);
    assert!(points.iter().enumerate().all(|(i, p)| {
        p.timestamp_ns == i64::try_from(i).unwrap()
            && p.fields[0].1 == FieldValue::I64(i64::try_from(i).unwrap())
    }));
}

#[test]
fn non_ascii_text_is_kept_intact() {
    let p = one("m,city=Zürich s=\"grüße\" 1");
    assert_eq!(p.labels.get("city"), Some("Zürich"));
    assert_eq!(field(&p, "s"), FieldValue::Str("grüße".into()));
}
