//! Decoding errors.

/// Why a body or message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed, or breaks a validation rule (the message names the offending value,
    /// line, index or series).
    #[error("{0}")]
    Invalid(String),
    /// The body would decompress past the limit (checked before decompressing).
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl From<datanexus_model::Error> for Error {
    fn from(e: datanexus_model::Error) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
