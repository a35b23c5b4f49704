//! Broker errors, with a kind that callers map to statuses and retry decisions.

/// What kind of failure, independent of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request itself is wrong (empty batch, bad partition, oversized).
    InvalidInput,
    /// Unknown topic or group.
    NotFound,
    /// The backend cannot be reached or is overloaded; retrying may help.
    Unavailable,
    /// The records were handed to another consumer (lease expired, rebalance).
    Fenced,
    /// The broker was stopped.
    Closed,
    /// Anything else (I/O failure, corruption).
    Internal,
}

/// A broker error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Unknown topic.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// Unknown consumer group of a topic.
    #[error("unknown group {group:?} of topic {topic:?}")]
    UnknownGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// A bad request.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend is unreachable or refused.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The records are no longer leased to this consumer.
    #[error("records no longer leased to this consumer: {0}")]
    Fenced(String),
    /// The broker was stopped.
    #[error("broker is stopped")]
    Closed,
    /// The embedded log failed.
    #[error(transparent)]
    Seglog(#[from] datanexus_seglog::Error),
    /// Another backend failure.
    #[error("broker failure: {0}")]
    Internal(String),
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        use datanexus_seglog::Error as S;
        match self {
            Error::UnknownTopic(_) | Error::UnknownGroup { .. } => ErrorKind::NotFound,
            Error::Invalid(_) => ErrorKind::InvalidInput,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Fenced(_) => ErrorKind::Fenced,
            Error::Closed => ErrorKind::Closed,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Seglog(e) => match e {
                S::UnknownTopic(_) | S::UnknownPartition { .. } | S::UnknownGroup { .. } => {
                    ErrorKind::NotFound
                }
                S::LeaseExpired { .. } | S::Fenced(_) => ErrorKind::Fenced,
                S::Closed => ErrorKind::Closed,
                S::EmptyBatch
                | S::BatchTooLarge { .. }
                | S::InvalidName { .. }
                | S::InvalidPartitionCount(_)
                | S::PartitionCountMismatch { .. }
                | S::OffsetOutOfRange { .. } => ErrorKind::InvalidInput,
                S::Locked(_) => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable)
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
