//! InfluxDB line protocol: `measurement[,tag=value...] field=value[,field=value...] [timestamp]`.
//!
//! One [`Point`] per line, keeping every field of the line. The Prometheus exposition
//! names field `f` of measurement `m` as `m_f`, and the field `value` as plain `m` (the
//! VictoriaMetrics convention), so `cpu,host=a value=1,idle=2` is exposed as
//! `cpu{host="a"} 1` and `cpu_idle{host="a"} 2`; queries name the measurement and the
//! field (`GET /metrics/cpu?field=idle`). Tags become labels.
//!
//! # Syntax
//! - Escapes: in the measurement `\,` and `\ `; in tag keys, tag values and field keys
//!   `\,`, `\=` and `\ `; in string field values (double-quoted) `\"` and `\\`. A
//!   backslash before any other character is kept as is.
//! - Field values: float (`1`, `1.5`, `-1e3`), integer (`1i`), unsigned (`1u`), boolean
//!   (`t`, `T`, `true`, `True`, `TRUE`, `f`, `F`, `false`, `False`, `FALSE`) and string
//!   (`"..."`). `inf` and `nan` are not numbers here (as in InfluxDB).
//! - Blank lines and lines starting with `#` are skipped; `\r\n` line ends are
//!   accepted; leading and trailing spaces of a line are ignored. Newlines inside
//!   string values are not supported.
//! - The timestamp is an integer in the request's [`Precision`] (nanoseconds by
//!   default). Without one, a point gets the receive time `now_ns` plus its index in
//!   the body, so points of one request without timestamps stay distinct samples
//!   (the store keeps one sample per series and nanosecond).
//!
//! # Validation
//! Measurement names and tag keys are made Prometheus-legal (other characters become
//! `_`, a leading digit gets a `_` prefix, `__` loses underscores; two tag keys mapping
//! to one name keep the later value), then every point passes [`validate::point`]. The first bad line rejects the
//! whole body ([`LineError`] names it, 1-based); there is no partial acceptance.
//!
//! Tokens are borrowed slices of the body; a name or value is copied once into the
//! point, and unescaped only when it contains an escape.

use crate::event::{sanitize_label_name, sanitize_metric_name};
use crate::metric::MetricType;
use crate::point::{FieldValue, Labels, Point};
use crate::validate::{self, Limits};

#[cfg(test)]
mod tests;

/// Characters escapable in a measurement.
const MEASUREMENT_ESCAPES: &[u8] = b", ";
/// Characters escapable in tag keys, tag values and field keys.
const KEY_ESCAPES: &[u8] = b", =";
/// Characters escapable in string field values.
const STRING_ESCAPES: &[u8] = b"\"\\";

/// The unit of line-protocol timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Nanoseconds (`ns`, `n`), the default.
    #[default]
    Nanoseconds,
    /// Microseconds (`us`, `u`).
    Microseconds,
    /// Milliseconds (`ms`).
    Milliseconds,
    /// Seconds (`s`).
    Seconds,
}

impl Precision {
    /// Parses `ns`/`n`, `us`/`u`, `ms` or `s`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ns" | "n" => Some(Precision::Nanoseconds),
            "us" | "u" => Some(Precision::Microseconds),
            "ms" => Some(Precision::Milliseconds),
            "s" => Some(Precision::Seconds),
            _ => None,
        }
    }

    /// Nanoseconds per unit.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
        }
    }
}

/// The first bad line of a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// The line number, 1-based.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Parses a line-protocol body into validated points, one per line.
///
/// # Errors
/// [`LineError`] for the first line that does not parse or validate.
pub fn parse(
    body: &str,
    precision: Precision,
    now_ns: i64,
    limits: &Limits,
) -> Result<Vec<Point>, LineError> {
    let mut points = Vec::with_capacity(body.bytes().filter(|b| *b == b'\n').count() + 1);
    for (index, raw) in body.split('\n').enumerate() {
        let line = raw.trim_matches([' ', '\t', '\r']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let offset = i64::try_from(points.len()).unwrap_or(i64::MAX);
        let point = parse_line(line, precision, now_ns.saturating_add(offset), limits).map_err(
            |message| LineError {
                line: index + 1,
                message,
            },
        )?;
        points.push(point);
    }
    Ok(points)
}

/// Parses one non-blank, non-comment line (trimmed).
fn parse_line(
    line: &str,
    precision: Precision,
    default_ns: i64,
    limits: &Limits,
) -> Result<Point, String> {
    let mut cursor = Cursor::new(line);
    let (name, escaped) = cursor.token(b", ", MEASUREMENT_ESCAPES);
    if name.is_empty() {
        return Err("missing measurement name".into());
    }
    // InfluxDB accepts any measurement and tag key; Prometheus-illegal characters
    // become `_` (as VictoriaMetrics and Prometheus' OTLP translation do).
    let measurement = sanitize_metric_name(&unescape(name, escaped, MEASUREMENT_ESCAPES));
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut raw_keys: Vec<String> = Vec::new();
    while cursor.eat(b',') {
        let key = cursor.key("tag")?;
        let (value, escaped) = cursor.token(b", ", KEY_ESCAPES);
        if value.is_empty() {
            return Err(format!("tag {key:?} has an empty value"));
        }
        // The same key twice is an error (as in InfluxDB); two keys that only map to
        // one name keep the later value.
        if raw_keys.contains(&key) {
            return Err(format!("duplicate label name {key:?}"));
        }
        let name = sanitize_label_name(&key);
        raw_keys.push(key);
        let value = unescape(value, escaped, KEY_ESCAPES);
        match tags.iter_mut().find(|(k, _)| *k == name) {
            Some(tag) => tag.1 = value,
            None => tags.push((name, value)),
        }
    }
    cursor.skip_spaces();
    if cursor.at_end() {
        return Err(format!("measurement {measurement:?} has no fields"));
    }
    let mut fields = Vec::new();
    loop {
        let key = cursor.key("field")?;
        fields.push((key, cursor.field_value()?));
        if !cursor.eat(b',') {
            break;
        }
    }
    let timestamp_ns = if cursor.at_end() {
        default_ns
    } else {
        cursor.skip_spaces();
        timestamp(cursor.rest(), precision)?
    };
    let labels = Labels::new(tags).map_err(|e| e.to_string())?;
    let point = Point {
        measurement,
        labels,
        fields,
        timestamp_ns,
        kind: MetricType::Untyped,
        help: None,
    };
    validate::point(&point, limits).map_err(|e| e.to_string())?;
    Ok(point)
}

/// A position in one line. Every stop byte is ASCII, so every slice taken at a stop
/// is on a character boundary.
struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// Consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or_default()
    }

    /// The raw text up to the first unescaped byte of `stops` (or the end), and
    /// whether it contains an escape of one of `escapes`.
    fn token(&mut self, stops: &[u8], escapes: &[u8]) -> (&'a str, bool) {
        let start = self.pos;
        let mut escaped = false;
        while let Some(b) = self.peek() {
            if b == b'\\'
                && self
                    .bytes
                    .get(self.pos + 1)
                    .is_some_and(|n| escapes.contains(n))
            {
                escaped = true;
                self.pos += 2;
            } else if stops.contains(&b) {
                break;
            } else {
                self.pos += 1;
            }
        }
        (self.text.get(start..self.pos).unwrap_or_default(), escaped)
    }

    /// A tag or field key and its `=`.
    fn key(&mut self, what: &str) -> Result<String, String> {
        let (key, escaped) = self.token(b", =", KEY_ESCAPES);
        if key.is_empty() {
            return Err(format!("missing {what} key"));
        }
        if !self.eat(b'=') {
            return Err(format!("{what} {key:?} has no '=' and value"));
        }
        Ok(unescape(key, escaped, KEY_ESCAPES))
    }

    /// A field value, followed by `,`, ` ` or the end of the line.
    fn field_value(&mut self) -> Result<FieldValue, String> {
        if !self.eat(b'"') {
            let (raw, _) = self.token(b", ", b"");
            return scalar(raw);
        }
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err("unterminated string field value".into()),
                Some(b'\\')
                    if self
                        .bytes
                        .get(self.pos + 1)
                        .is_some_and(|n| STRING_ESCAPES.contains(n)) =>
                {
                    escaped = true;
                    self.pos += 2;
                }
                Some(b'"') => break,
                Some(_) => self.pos += 1,
            }
        }
        let raw = self.text.get(start..self.pos).unwrap_or_default();
        self.pos += 1;
        if !matches!(self.peek(), None | Some(b',' | b' ')) {
            return Err("unexpected text after the closing quote of a string field value".into());
        }
        Ok(FieldValue::Str(unescape(raw, escaped, STRING_ESCAPES)))
    }
}

/// A float, integer (`i`), unsigned (`u`) or boolean field value.
fn scalar(raw: &str) -> Result<FieldValue, String> {
    let value = match raw {
        "" => return Err("missing field value".into()),
        "t" | "T" | "true" | "True" | "TRUE" => FieldValue::Bool(true),
        "f" | "F" | "false" | "False" | "FALSE" => FieldValue::Bool(false),
        _ => {
            if let Some(digits) = raw.strip_suffix('i') {
                digits
                    .parse::<i64>()
                    .map(FieldValue::I64)
                    .map_err(|e| format!("invalid integer field value {raw:?}: {e}"))?
            } else if let Some(digits) = raw.strip_suffix('u') {
                digits
                    .parse::<u64>()
                    .map(FieldValue::U64)
                    .map_err(|e| format!("invalid unsigned field value {raw:?}: {e}"))?
            } else if raw
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
            {
                raw.parse::<f64>()
                    .map(FieldValue::F64)
                    .map_err(|e| format!("invalid float field value {raw:?}: {e}"))?
            } else {
                return Err(format!("invalid field value {raw:?}"));
            }
        }
    };
    Ok(value)
}

/// An integer timestamp in `precision`, as nanoseconds since the epoch.
fn timestamp(text: &str, precision: Precision) -> Result<i64, String> {
    let units: i64 = text
        .parse()
        .map_err(|_| format!("invalid timestamp {text:?}: expected an integer"))?;
    if units < 0 {
        return Err(format!("invalid timestamp {text:?}: before 1970-01-01"));
    }
    units
        .checked_mul(precision.nanos_per_unit())
        .ok_or_else(|| format!("invalid timestamp {text:?}: after 2262-04-11"))
}

/// `raw` without the backslashes of escapes of `escapes` (copied once).
fn unescape(raw: &str, escaped: bool, escapes: &[u8]) -> String {
    if !escaped {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && next.is_ascii()
            && escapes.contains(&(next as u8))
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}
