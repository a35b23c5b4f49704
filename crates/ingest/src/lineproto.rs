//! InfluxDB line protocol bodies (`POST /write`, `POST /api/v2/write`), parsed by
//! [`datanexus_model::lineproto`]: one point per line, all or nothing.

use datanexus_model::lineproto::{self as parser, Precision};
use datanexus_model::{Limits, Point};

use crate::convert::check_batch_len;
use crate::{Error, Result};

/// A line protocol body to points, one per line; lines without a timestamp get
/// `now_ns`. A body without points (empty, blank or only comments) is no points, as
/// InfluxDB does; more than `max_batch` lines are refused.
///
/// # Errors
/// [`Error::Invalid`] naming the first bad line (`line 3: ...`), or the limit.
pub fn points(
    body: &[u8],
    precision: Precision,
    limits: &Limits,
    max_batch: usize,
    now_ns: i64,
) -> Result<Vec<Point>> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let valid = body.get(..e.valid_up_to()).unwrap_or_default();
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        Error::Invalid(format!("line {line}: not valid UTF-8"))
    })?;
    let points = parser::parse(text, precision, now_ns, limits)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    if !points.is_empty() {
        check_batch_len(points.len(), max_batch, "lines", "max_batch_metrics")?;
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_names_the_bad_one() {
        let limits = Limits::default();
        let pts = points(
            b"cpu,host=a value=1 5\nmem v=2i",
            Precision::Seconds,
            &limits,
            10,
            1,
        )
        .unwrap();
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].timestamp_ns, 5_000_000_000);
        let err = points(b"a v=1\nb v=\xff", Precision::Nanoseconds, &limits, 10, 1).unwrap_err();
        assert_eq!(err.to_string(), "line 2: not valid UTF-8");
        assert!(
            points(b"# only\n\n", Precision::Nanoseconds, &limits, 10, 1)
                .unwrap()
                .is_empty()
        );
        let err = points(b"a v=1\nb v=2", Precision::Nanoseconds, &limits, 1, 1).unwrap_err();
        assert!(err.to_string().contains("limit of 1"), "{err}");
    }
}
