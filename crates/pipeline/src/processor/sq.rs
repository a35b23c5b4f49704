//! `sq`: the square of an `int32`. A square that does not fit an `int32` is an error
//! (the NimbusGRPC seed wrapped it around; Data Nexus answers with a clear error).

use super::{ProcessError, Processor};

/// The square of an `int32`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sq;

impl Processor for Sq {
    fn name(&self) -> &'static str {
        "sq"
    }

    fn process(&self, number: i32) -> Result<i32, ProcessError> {
        number
            .checked_mul(number)
            .ok_or_else(|| ProcessError::new(format!("sq({number}) overflows int32")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squares_fit_up_to_46340() {
        for (n, want) in [
            (0, 0),
            (1, 1),
            (-1, 1),
            (12, 144),
            (-12, 144),
            (46_340, 2_147_395_600),
            (-46_340, 2_147_395_600),
        ] {
            assert_eq!(Sq.process(n), Ok(want), "sq({n})");
        }
    }

    #[test]
    fn overflow_is_an_error_never_a_wrapped_value() {
        for n in [46_341, -46_341, i32::MAX, i32::MIN] {
            let err = Sq.process(n).unwrap_err();
            assert_eq!(err.message(), format!("sq({n}) overflows int32"));
        }
    }
}
