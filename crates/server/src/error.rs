//! The server's error type and the one mapping of errors to HTTP statuses and gRPC codes.
//!
//! [`Error::status`] is the single source of truth: `impl IntoResponse` (HTTP) and
//! `impl From<Error> for tonic::Status` (gRPC) both use it. Clients never see internals:
//! [`Error::public_message`] replaces the text of internal faults by `internal error`
//! and the details go to the log instead.

use datanexus_telemetry::ErrorKind as TelemetryKind;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datanexus_broker::ErrorKind;

/// What went wrong while serving a request (or starting the server).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or breaks a validation rule (the message names the
    /// offending value).
    #[error("{0}")]
    Invalid(String),
    /// No bearer token, or not an accepted one.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A valid token without the scope the request needs.
    #[error("{0}")]
    Forbidden(String),
    /// The request body is larger than the configured limit (after decompression).
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request body is not in a format this endpoint accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The in-flight budget or the concurrency limit is exhausted; retry later.
    #[error("server overloaded: {0}; retry later")]
    Overloaded(String),
    /// The request took longer than the configured timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// No such resource or route.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken (e.g. a connection id registered twice).
    #[error("{0}")]
    Conflict(String),
    /// A database this server reads for the client (a registered connection) failed or
    /// cannot be reached; the message names it and the cause.
    #[error("{0}")]
    BadGateway(String),
    /// This process opened no store (a `gateway` or `processor`): the query goes to the
    /// process that has one.
    #[error(
        "this process has no store: queries are served by the process with role `store` (or `all`)"
    )]
    NoStore,
    /// The broker refused or failed.
    #[error(transparent)]
    Broker(#[from] datanexus_broker::Error),
    /// The store refused or failed (unknown metric, bad query, unreachable, …).
    #[error(transparent)]
    Store(#[from] datanexus_store::Error),
    /// A fault of the server itself (a bug or a broken invariant).
    #[error("internal error: {0}")]
    Internal(String),
    /// An I/O failure of a listener.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC transport failed.
    #[error("grpc transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<datanexus_ingest::Error> for Error {
    fn from(e: datanexus_ingest::Error) -> Self {
        match e {
            datanexus_ingest::Error::PayloadTooLarge { limit } => Error::PayloadTooLarge { limit },
            e => Error::Invalid(e.to_string()),
        }
    }
}

impl From<datanexus_export::Error> for Error {
    fn from(e: datanexus_export::Error) -> Self {
        use datanexus_export::Error as E;
        match e {
            E::Invalid(m) => Error::Invalid(m),
            E::Conflict(m) => Error::Conflict(m),
            E::NotFound(m) => Error::NotFound(m),
            E::Unreachable(m) => Error::BadGateway(m),
            E::Store(e) => Error::Store(e),
            e => Error::Internal(e.to_string()),
        }
    }
}

impl From<datanexus_model::Error> for Error {
    fn from(e: datanexus_model::Error) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status and gRPC code of this error: the one mapping used by both APIs.
    pub fn status(&self) -> (StatusCode, tonic::Code) {
        match self {
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
            Error::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::InvalidArgument)
            }
            Error::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
            ),
            Error::Overloaded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::ResourceExhausted,
            ),
            Error::Timeout(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                tonic::Code::DeadlineExceeded,
            ),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, tonic::Code::NotFound),
            Error::Conflict(_) => (StatusCode::CONFLICT, tonic::Code::AlreadyExists),
            Error::BadGateway(_) => (StatusCode::BAD_GATEWAY, tonic::Code::Unavailable),
            Error::NoStore => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
            Error::Broker(e) => broker_status(e.kind()),
            Error::Store(e) => store_status(e),
            Error::Internal(_) | Error::Io(_) | Error::Transport(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal)
            }
        }
    }

    /// The kind of this error for telemetry (`errors{kind=…}`), derived from
    /// [`Error::status`] so that both always agree.
    pub fn kind(&self) -> TelemetryKind {
        match self.status() {
            (_, tonic::Code::DeadlineExceeded) => TelemetryKind::Timeout,
            (StatusCode::BAD_REQUEST, _) => TelemetryKind::InvalidInput,
            (StatusCode::UNAUTHORIZED, _) => TelemetryKind::Unauthenticated,
            (StatusCode::FORBIDDEN, _) => TelemetryKind::Forbidden,
            (StatusCode::NOT_FOUND, _) => TelemetryKind::NotFound,
            (StatusCode::CONFLICT, _) => TelemetryKind::Conflict,
            (StatusCode::PAYLOAD_TOO_LARGE, _) => TelemetryKind::PayloadTooLarge,
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, _) => TelemetryKind::UnsupportedMediaType,
            (StatusCode::TOO_MANY_REQUESTS, _) => TelemetryKind::Overloaded,
            (StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY, _) => {
                TelemetryKind::Unavailable
            }
            _ => TelemetryKind::Internal,
        }
    }

    /// [`Error::kind`] as its label value.
    pub fn kind_label(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Whether this is a fault of the server rather than of the client or the load.
    pub fn is_internal(&self) -> bool {
        self.status().0 == StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The message shown to clients: the error text, except `internal error` for
    /// internal faults (whose details are logged by the caller of this function).
    pub fn public_message(&self) -> String {
        if self.is_internal() {
            "internal error".to_owned()
        } else {
            self.to_string()
        }
    }

    /// Logs internal faults (with their details) and returns the client-facing message.
    fn log_and_publish(&self) -> String {
        if self.is_internal() {
            tracing::error!(error = %self, "internal fault while serving a request");
        }
        self.public_message()
    }
}

fn broker_status(kind: ErrorKind) -> (StatusCode, tonic::Code) {
    match kind {
        ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, tonic::Code::NotFound),
        ErrorKind::Unavailable | ErrorKind::Closed => {
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
        }
        ErrorKind::Fenced => (StatusCode::CONFLICT, tonic::Code::Aborted),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
    }
}

fn store_status(e: &datanexus_store::Error) -> (StatusCode, tonic::Code) {
    use datanexus_store::Error as S;
    match e {
        S::NotFound(_) => (StatusCode::NOT_FOUND, tonic::Code::NotFound),
        S::Invalid(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        S::Unavailable(_) | S::Closed => {
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
    }
}

/// Marks an HTTP response as produced by an [`Error`] of this kind
/// ([`Error::kind_label`]), so that the telemetry layer counts it once, whoever
/// produced it (handler, extractor, auth or limit layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorKindTag(pub(crate) TelemetryKind);

/// `{"error": "..."}` with `status`, the body of every HTTP error.
pub(crate) fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, _) = self.status();
        let mut response = json_error(status, self.log_and_publish());
        response.extensions_mut().insert(ErrorKindTag(self.kind()));
        let headers = response.headers_mut();
        match self {
            Error::Overloaded(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

impl Error {
    /// How a stream ends because of this error (its gRPC code, the public message).
    pub(crate) fn stream_end(&self) -> datanexus_results::StreamEnd {
        use datanexus_results::EndCode;
        let code = match self.status().1 {
            tonic::Code::InvalidArgument => EndCode::InvalidArgument,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                EndCode::Unauthenticated
            }
            tonic::Code::ResourceExhausted => EndCode::ResourceExhausted,
            tonic::Code::DeadlineExceeded => EndCode::DeadlineExceeded,
            tonic::Code::NotFound => EndCode::NotFound,
            tonic::Code::Unavailable => EndCode::Unavailable,
            tonic::Code::Aborted => EndCode::Aborted,
            _ => EndCode::Internal,
        };
        datanexus_results::StreamEnd::new(code, self.log_and_publish())
    }
}

/// The gRPC status a stream ends with.
pub(crate) fn end_status(end: datanexus_results::StreamEnd) -> tonic::Status {
    use datanexus_results::EndCode;
    let code = match end.code {
        EndCode::Aborted => tonic::Code::Aborted,
        EndCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        EndCode::Unavailable => tonic::Code::Unavailable,
        EndCode::InvalidArgument => tonic::Code::InvalidArgument,
        EndCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        EndCode::Unauthenticated => tonic::Code::Unauthenticated,
        EndCode::NotFound => tonic::Code::NotFound,
        EndCode::Internal => tonic::Code::Internal,
    };
    tonic::Status::new(code, end.message)
}

impl From<datanexus_results::Error> for Error {
    fn from(e: datanexus_results::Error) -> Self {
        match e {
            datanexus_results::Error::Store(e) => Error::Store(e),
            datanexus_results::Error::Unavailable(m) => {
                Error::Store(datanexus_store::Error::Unavailable(m))
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

/// Longest gRPC status message sent, in bytes (longer ones are cut).
const MAX_GRPC_MESSAGE_BYTES: usize = 1024;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let (_, code) = e.status();
        let mut message = e.log_and_publish();
        if message.len() > MAX_GRPC_MESSAGE_BYTES {
            // The message travels in a header (`grpc-message`); a huge one makes the
            // HTTP/2 peer drop the connection instead of reporting the status.
            tracing::debug!(error = %message, "long error message truncated for gRPC");
            let mut end = MAX_GRPC_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let mut status = tonic::Status::new(code, message);
        if matches!(e, Error::Overloaded(_)) {
            // The gRPC retry-throttling hint (honoured by clients with a retry policy).
            status.metadata_mut().insert(
                "grpc-retry-pushback-ms",
                tonic::metadata::MetadataValue::from_static("1000"),
            );
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_for_grpc_headers() {
        let status = tonic::Status::from(Error::Invalid("é".repeat(5000)));
        assert!(status.message().len() <= MAX_GRPC_MESSAGE_BYTES + '…'.len_utf8());
        assert!(status.message().ends_with('…'));
    }

    #[test]
    fn maps_client_mistakes_to_4xx_and_invalid_argument() {
        let e = Error::from(datanexus_model::Error::UnknownMetricType("countr".into()));
        assert_eq!(
            e.status(),
            (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument)
        );
        assert!(
            e.public_message().contains("\"countr\""),
            "{}",
            e.public_message()
        );
        assert_eq!(
            Error::PayloadTooLarge { limit: 1 }.status().0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn maps_broker_kinds_and_hides_internal_details() {
        let unavailable = Error::from(datanexus_broker::Error::Unavailable("disk full".into()));
        assert_eq!(
            unavailable.status(),
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
        );
        let closed = Error::from(datanexus_broker::Error::Closed);
        assert_eq!(closed.status().1, tonic::Code::Unavailable);
        let unknown = Error::from(datanexus_broker::Error::UnknownTopic("t".into()));
        assert_eq!(
            unknown.status(),
            (StatusCode::NOT_FOUND, tonic::Code::NotFound)
        );
        let internal = Error::from(datanexus_broker::Error::Internal(
            "segment 7 checksum mismatch".into(),
        ));
        assert_eq!(
            internal.status(),
            (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal)
        );
        assert_eq!(internal.public_message(), "internal error");
        let status = tonic::Status::from(internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn maps_store_kinds_and_hides_internal_details() {
        let status = |e: datanexus_store::Error| Error::from(e).status().0;
        assert_eq!(
            status(datanexus_store::Error::NotFound("cpu".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(datanexus_store::Error::Invalid("bad step".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(datanexus_store::Error::Unavailable("down".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(datanexus_store::Error::Closed),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let corrupt = Error::from(datanexus_store::Error::Corrupt {
            path: "/data/store/0001.parquet".into(),
            reason: "bad footer".into(),
        });
        assert_eq!(corrupt.status().0, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(corrupt.public_message(), "internal error");
        let missing = Error::from(datanexus_store::Error::NotFound("cpu".into()));
        assert_eq!(missing.public_message(), "unknown metric \"cpu\"");
    }

    #[test]
    fn kind_labels_follow_the_status_mapping() {
        assert_eq!(Error::Invalid("x".into()).kind_label(), "invalid_input");
        assert_eq!(Error::Unauthenticated("x").kind_label(), "unauthenticated");
        assert_eq!(Error::Overloaded("x".into()).kind_label(), "overloaded");
        assert_eq!(
            Error::Timeout(Duration::from_secs(1)).kind_label(),
            "timeout"
        );
        assert_eq!(
            Error::from(datanexus_broker::Error::Closed).kind_label(),
            "unavailable"
        );
        assert_eq!(Error::Internal("x".into()).kind_label(), "internal");
        let response = Error::NotFound("x".into()).into_response();
        assert_eq!(
            response.extensions().get::<ErrorKindTag>(),
            Some(&ErrorKindTag(TelemetryKind::NotFound))
        );
    }

    #[test]
    fn overload_carries_retry_hints_on_both_apis() {
        let response = Error::Overloaded("busy".into()).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let status = tonic::Status::from(Error::Overloaded("busy".into()));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());
    }

    #[test]
    fn unauthenticated_asks_for_a_bearer_token() {
        let response = Error::Unauthenticated("missing bearer token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
