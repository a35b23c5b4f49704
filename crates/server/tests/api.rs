//! Black-box tests of the server: gRPC against a real server on port 0 ([`run`]), HTTP
//! through [`http_app`] with `oneshot`, both over a real embedded broker and a real
//! embedded store in a tempdir.
//!
//! [`run`]: datanexus_server::run
//! [`http_app`]: datanexus_server::http_app

mod api {
    mod connections;
    mod exposition;
    mod grpc;
    mod http;
    mod http_limits;
    mod influx;
    mod promtool;
    mod queries;
    mod remote_write;
    mod scopes;
    mod stream_support;
    mod streams;
    mod support;
    mod tls;
}
