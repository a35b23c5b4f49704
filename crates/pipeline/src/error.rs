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
    /// Sinkers or a forwarder were asked for, and no store was given.
    #[error("the sinkers and the result forwarder write to a store, and this process has none")]
    NoStore,
    /// A worker task failed.
    #[error("{0}")]
    Worker(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
