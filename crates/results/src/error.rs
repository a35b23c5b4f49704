//! Errors of results and streams.

/// A results error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed (writing or reading results).
    #[error(transparent)]
    Store(#[from] datanexus_store::Error),
    /// A shared mailbox (Redis) is unreachable or failed a command; retrying may help.
    #[error("result mailbox unavailable: {0}")]
    Unavailable(String),
    /// The stream cursors cannot be read or written.
    #[error("stream cursors at {path}: {source}")]
    Cursors {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A fault of the program.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(e) => e.is_retryable(),
            Error::Unavailable(_) | Error::Cursors { .. } => true,
            Error::Internal(_) => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a stream ends with an error; the transport maps the code to its own status
/// (gRPC: the code of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCode {
    /// Another stream took over, or the client broke the protocol's order.
    Aborted,
    /// The client read too slowly, or a budget is exhausted.
    ResourceExhausted,
    /// The server is shutting down or a backend is unreachable: reconnect to resume.
    Unavailable,
    /// The client sent something invalid.
    InvalidArgument,
    /// A deadline passed.
    DeadlineExceeded,
    /// No valid credentials.
    Unauthenticated,
    /// Not found.
    NotFound,
    /// A fault of the server.
    Internal,
}

/// Why a stream ends with an error: a code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    /// What kind of end.
    pub code: EndCode,
    /// Shown to the client.
    pub message: String,
}

impl StreamEnd {
    /// An end with `code` and `message`.
    pub fn new(code: EndCode, message: impl Into<String>) -> Self {
        StreamEnd {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}
