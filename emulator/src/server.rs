//! Accept loop: HTTP/1.1 over TCP or TLS with hyper, so a handler can make the server drop
//! a connection without answering (the `CloseConnection` fault), which axum::serve cannot.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::faults::wants_drop;
use crate::tls::PeerCertificate;

/// Runs until the task is aborted; aborting it drops the `JoinSet`, which aborts every
/// open connection too (hung requests included).
pub(crate) async fn serve(listener: TcpListener, app: Router, tls: Option<TlsAcceptor>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, app.clone(), tls.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, app: Router, tls: Option<TlsAcceptor>) {
    match tls {
        None => http1(stream, app, None).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => {
                // The client certificate, if any, for handlers that authenticate by it.
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| PeerCertificate::new(leaf.clone().into_owned()));
                http1(stream, app, peer).await
            }
            Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
        },
    }
}

/// Marker error: hyper closes the connection when the service fails.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose (fault injection)")
    }
}

impl std::error::Error for Dropped {}

async fn http1<S>(io: S, app: Router, peer: Option<PeerCertificate>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let app = app.clone();
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        async move {
            let resp = match app.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            if wants_drop(&resp) {
                Err(Dropped)
            } else {
                Ok::<_, Dropped>(resp)
            }
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(error = %e, "connection ended");
    }
}
