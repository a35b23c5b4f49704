//! Worker errors.

/// A worker error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] datanexus_broker::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] datanexus_store::Error),
    /// A worker task failed.
    #[error("{0}")]
    Worker(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
