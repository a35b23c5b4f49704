//! Black-box tests of the server: gRPC against a real server on port 0 ([`run`]), HTTP
//! through [`http_app`] with `oneshot`, both over a real embedded broker in a tempdir.
//!
//! [`run`]: datanexus_server::run
//! [`http_app`]: datanexus_server::http_app

mod api {
    mod grpc;
    mod http;
    mod http_limits;
    mod support;
}
