//! Store errors.

/// A store error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Unknown measurement (or nothing stored for it).
    #[error("unknown metric {0:?}")]
    NotFound(String),
    /// A bad query.
    #[error("invalid query: {0}")]
    Invalid(String),
    /// The backend is unreachable (retrying may help).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store was stopped.
    #[error("store is stopped")]
    Closed,
    /// An I/O failure.
    #[error("store i/o error while trying to {op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Data on disk that cannot be read.
    #[error("corrupt store file {path:?}: {reason}")]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Anything else.
    #[error("store failure: {0}")]
    Internal(String),
}

impl Error {
    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Io { .. })
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
