//! A bare tonic `nimbus.NimbusService` that answers each request on the same stream at
//! once (squaring in place): no log, no workers, no store. Measured next to the real
//! pipeline it shows the floor any pipeline pays for gRPC bidi round trips here.

use std::net::SocketAddr;
use std::pin::Pin;

use datanexus_proto::nimbus::nimbus_service_server::{NimbusService, NimbusServiceServer};
use datanexus_proto::nimbus::{EventRequest, EventResponse};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

struct Echo;

type Responses = Pin<Box<dyn Stream<Item = Result<EventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NimbusService for Echo {
    type ProcessEventStream = Responses;

    async fn process_event(
        &self,
        request: Request<Streaming<EventRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let out = request.into_inner().map(|r| {
            r.map(|e| EventResponse {
                result: e.number.wrapping_mul(e.number),
                event_name: e.event_name,
                number: e.number,
                log: None,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// Starts the echo server on a free loopback port; returns its address.
///
/// # Errors
/// If the port cannot be bound.
pub(crate) async fn start() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|c| {
        c.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NimbusServiceServer::new(Echo))
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}
