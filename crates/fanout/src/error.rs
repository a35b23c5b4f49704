//! Fan-out errors.

/// A fan-out error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis is unreachable or failed a command.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// A setting is wrong (an invalid URL).
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub(crate) fn redis(e: redis::RedisError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl From<Error> for datanexus_results::Error {
    fn from(e: Error) -> Self {
        datanexus_results::Error::Unavailable(e.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
