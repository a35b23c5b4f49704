//! The export crate's error type.

/// What went wrong with a connection or an export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or breaks a rule (the message names the value), or the
    /// database of a connection being registered did not answer (the message names it
    /// and the cause).
    #[error("{0}")]
    Invalid(String),
    /// The name is taken (a connection id registered twice).
    #[error("{0}")]
    Conflict(String),
    /// No such connection.
    #[error("{0}")]
    NotFound(String),
    /// A registered connection's database cannot be reached now (the message names it
    /// and the cause).
    #[error("{0}")]
    Unreachable(String),
    /// Reading or writing the registry's file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The own store failed.
    #[error(transparent)]
    Store(#[from] datanexus_store::Error),
}

/// The export crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An [`Error::Io`] for `path`.
pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}
