//! Scoped tokens: every guarded route of the router, with no token, a wrong one, and a
//! token of each scope — a route's own scope passes authentication, the others get
//! `403`. Routes come from `route_scopes()`, the list the router is built from, so a
//! route cannot be added without a scope, and a new one is walked here too.

use axum::http::{Method, Request, StatusCode};
use datanexus_config::{Scope, ScopedToken, TokenConfig};
use datanexus_proto::data_nexus::metrics_service_client::MetricsServiceClient;
use datanexus_proto::data_nexus::{BatchMetrics, Metric};
use datanexus_server::{ServerOptions, route_scopes};
use tonic::Code;
use tonic::metadata::MetadataValue;

use super::support::{Running, app, bearer, options, send_text};

fn token_of(scope: Scope) -> String {
    format!("token-{}", scope.as_str())
}

fn scoped_options() -> ServerOptions {
    ServerOptions {
        auth_tokens: Scope::ALL
            .iter()
            .map(|&scope| {
                TokenConfig::Scoped(ScopedToken {
                    token: token_of(scope),
                    scopes: vec![scope],
                })
            })
            .collect(),
        ..options()
    }
}

fn request(method: &Method, path: &str) -> Request<axum::body::Body> {
    let path = path.replace("{name}", "cpu");
    Request::builder()
        .method(method.clone())
        .uri(path)
        .body(axum::body::Body::empty())
        .expect("request")
}

#[tokio::test]
async fn every_route_needs_a_token_with_its_scope() {
    let (_dir, _broker, app) = app(scoped_options()).await;
    let routes = route_scopes();
    assert!(routes.len() >= 17, "{} routes", routes.len());
    for (method, path, scope) in routes {
        let what = format!("{method} {path} (scope {})", scope.as_str());
        let (status, _, body) = send_text(&app, request(&method, path)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{what} without a token: {body}"
        );
        let (status, _, body) = send_text(&app, bearer(request(&method, path), "wrong")).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{what} with a wrong token: {body}"
        );
        for other in Scope::ALL {
            let (status, _, body) =
                send_text(&app, bearer(request(&method, path), &token_of(other))).await;
            if other == scope {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what} with its own scope: {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{what} with a token of scope {}: {body}",
                    other.as_str()
                );
                assert!(body.contains(scope.as_str()), "{what}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn health_needs_no_token() {
    let (_dir, _broker, app) = app(scoped_options()).await;
    let (status, _, _) = send_text(&app, request(&Method::GET, "/health")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn grpc_ingest_needs_the_ingest_scope() {
    let server = Running::start(scoped_options()).await;
    let channel = server.channel().await;
    let batch = || BatchMetrics {
        metrics: vec![Metric {
            name: "m".into(),
            value: 1.0,
            ..Default::default()
        }],
    };
    for scope in Scope::ALL {
        let token = token_of(scope);
        let mut client = MetricsServiceClient::with_interceptor(
            channel.clone(),
            move |mut request: tonic::Request<()>| {
                let value = MetadataValue::try_from(format!("Bearer {token}")).expect("ascii");
                request.metadata_mut().insert("authorization", value);
                Ok(request)
            },
        );
        let outcome = client.ingest_metrics(batch()).await;
        if scope == Scope::Ingest {
            assert!(outcome.is_ok(), "{:?}", outcome.err());
        } else {
            let status = outcome.expect_err("a token without the ingest scope");
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(status.message().contains("ingest"), "{status:?}");
        }
    }
    server.shutdown().await.expect("clean shutdown");
}

/// `/datasets/*` are `query` routes, but browsing a registered connection with them
/// (`connection_id=`) reaches a database the admin registered: it needs `admin` too.
#[tokio::test]
async fn browsing_a_connection_needs_the_admin_scope() {
    let mut o = scoped_options();
    o.auth_tokens.push(TokenConfig::Scoped(ScopedToken {
        token: "token-both".into(),
        scopes: vec![Scope::Query, Scope::Admin],
    }));
    let (_dir, _broker, app) = app(o).await;
    for path in [
        "/datasets/list/?connection_id=pg",
        "/datasets/detail/?connection_id=pg&name=t",
        "/datasets/time-range/?connection_id=pg&name=t",
    ] {
        let get = || request(&Method::GET, path);
        let (status, _, body) = send_text(&app, bearer(get(), &token_of(Scope::Query))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("admin"), "{path}: {body}");
        // With both, it gets as far as the (unknown) connection.
        let (status, _, body) = send_text(&app, bearer(get(), "token-both")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    // Without connection_id a query token browses the own store as before.
    let (status, _, body) = send_text(
        &app,
        bearer(
            request(&Method::GET, "/datasets/list/"),
            &token_of(Scope::Query),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
