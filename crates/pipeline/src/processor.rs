//! Processors: stateless named functions of an `int32` that stream events ask for by
//! name (`event_name`, case-insensitive), e.g. `sq`. They hold no state, so any number
//! of processor workers may run them in parallel.
//!
//! # Adding a processor
//! One file and one line:
//! 1. `src/processor/{name}.rs` with a unit struct implementing [`Processor`] (see
//!    `sq.rs`): `name()` returns its lowercase name, `process()` its answer, or a
//!    [`ProcessError`] whose message the client gets in-band (never a wrapped or
//!    made-up value);
//! 2. its `mod` line here and one `.with(Arc::new(...))` line in [`Registry::builtin`].
//!
//! # Layout
//! - this file: [`Processor`], [`ProcessError`], [`Registry`].
//! - `sq.rs`: [`Sq`], the square of an `int32`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datanexus_proto::datanexus::v1::result_record::Outcome;

mod sq;

pub use sq::Sq;

/// Why a processor has no answer; the message is shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProcessError {
    message: String,
}

impl ProcessError {
    /// An error with a clear, lowercase message naming the offending value.
    pub fn new(message: impl Into<String>) -> Self {
        ProcessError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A stateless named function of an `int32`.
pub trait Processor: Send + Sync + 'static {
    /// Its name, lowercase (events name it case-insensitively).
    fn name(&self) -> &'static str;

    /// The answer for `number`.
    ///
    /// # Errors
    /// When there is no correct `int32` answer (e.g. it would overflow).
    fn process(&self, number: i32) -> Result<i32, ProcessError>;
}

/// The processors known by name.
#[derive(Clone, Default)]
pub struct Registry {
    by_name: BTreeMap<String, Arc<dyn Processor>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .finish()
    }
}

impl Registry {
    /// Every built-in processor.
    pub fn builtin() -> Self {
        Registry::default().with(Arc::new(Sq))
    }

    /// Adds (or replaces) a processor under its lowercased name.
    #[must_use]
    pub fn with(mut self, processor: Arc<dyn Processor>) -> Self {
        self.by_name
            .insert(processor.name().to_ascii_lowercase(), processor);
        self
    }

    /// The processor called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Processor>> {
        self.by_name.get(&name.to_ascii_lowercase()).cloned()
    }

    /// The known names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// The answer to an event: the processor's result, or an error for an unknown name
    /// or a failed processor (answered in-band, never dropped).
    pub fn outcome(&self, event_name: &str, number: i32) -> Outcome {
        match self.get(event_name) {
            // A panicking processor is answered in-band like any other failure: it must
            // not take the worker down (the event would be redelivered and crash the
            // next worker too). Processors are stateless, so nothing is left half-done.
            Some(p) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                p.process(number)
            })) {
                Ok(Ok(v)) => Outcome::Result(v),
                Ok(Err(e)) => Outcome::Error(e.message),
                Err(_) => Outcome::Error(format!("processor {:?} failed on {number}", p.name())),
            },
            None => Outcome::Error(format!(
                "unknown event name {event_name:?} (known: {})",
                self.names().join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Explodes;

    impl Processor for Explodes {
        fn name(&self) -> &'static str {
            "explodes"
        }

        fn process(&self, _number: i32) -> Result<i32, ProcessError> {
            panic!("boom")
        }
    }

    #[test]
    fn a_panicking_processor_is_answered_in_band() {
        let r = Registry::builtin().with(Arc::new(Explodes));
        assert_eq!(
            r.outcome("explodes", 3),
            Outcome::Error("processor \"explodes\" failed on 3".into())
        );
        assert_eq!(
            r.outcome("sq", 3),
            Outcome::Result(9),
            "the registry still works"
        );
    }

    #[test]
    fn lookup_ignores_case() {
        let r = Registry::builtin();
        assert_eq!(r.get("SQ").map(|p| p.name()), Some("sq"));
        assert_eq!(r.get("Sq").map(|p| p.name()), Some("sq"));
        assert!(r.get("cube").is_none());
    }

    #[test]
    fn unknown_names_are_answered_with_the_known_ones() {
        let r = Registry::builtin();
        assert_eq!(
            r.outcome("cube", 3),
            Outcome::Error("unknown event name \"cube\" (known: sq)".into())
        );
    }

    #[test]
    fn processor_errors_become_error_outcomes() {
        let r = Registry::builtin();
        assert_eq!(r.outcome("sq", -7), Outcome::Result(49));
        assert_eq!(
            r.outcome("sq", 46_341),
            Outcome::Error("sq(46341) overflows int32".into())
        );
    }
}
