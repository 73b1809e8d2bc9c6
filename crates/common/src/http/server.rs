//! The accept loop both services run: HTTP/1.1 and HTTP/2 (cleartext) on
//! one port through hyper-util's auto builder, with the limits `axum::serve`
//! cannot set — a header read timeout, a body deadline per request — and a
//! graceful shutdown that those limits keep bounded: a client stuck sending
//! its headers or its body is cut at its deadline, so it cannot hold the
//! process after SIGTERM.

use std::{
    future::Future,
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use tokio::net::{TcpListener, TcpStream};
use tower::Service;

use super::deadline::{DeadlineBody, RequestDeadline};
use crate::config::RequestDeadlines;

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the connections open at that moment to finish
/// their requests in flight (idle ones are closed at once).
///
/// Every request carries `ConnectInfo<SocketAddr>` (the TCP peer) and a
/// [`RequestDeadline`] in its extensions; its body fails with
/// [`super::RequestTimedOut`] once the deadline has passed.
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    deadlines: RequestDeadlines,
    shutdown: impl Future<Output = ()>,
    grace: std::time::Duration,
) -> bool {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.request.after);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(
            graceful.watcher(),
            builder.clone(),
            stream,
            peer,
            router.clone(),
            deadlines,
        ));
    }

    // No new connections from here; the listening socket closes now.
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "draining connections in flight"
    );
    tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok()
}

/// One connection: its requests get the peer address and a deadline, and the
/// connection is dropped when no first request has arrived within the header
/// timeout (hyper's own header timeout only starts once it has seen enough
/// bytes to tell HTTP/1 from HTTP/2: a client sending nothing at all would
/// otherwise hold the connection forever — hyperium/hyper#3962).
async fn serve_connection(
    watcher: Watcher,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    deadlines: RequestDeadlines,
) {
    // Small responses should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let requested = Arc::new(AtomicBool::new(false));
    let seen = requested.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        let deadline = RequestDeadline::new(deadlines);
        let mut request = request.map(|body| Body::new(DeadlineBody::new(body, deadline.clone())));
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(deadline);
        // `Router` is always ready and never fails.
        router.clone().call(request)
    });
    let connection =
        watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
    let mut connection = pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = tokio::time::sleep(deadlines.request.after) => {
            if !requested.load(Ordering::Relaxed) {
                tracing::debug!(%peer, "no request within the header timeout; connection closed");
                return;
            }
            connection.await
        }
    };
    if let Err(e) = result {
        // Clients that hang up, and the header timeout, end here.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// As `axum::serve` does: a reset before accept is the client's business;
/// anything else (out of file descriptors) is logged and the loop pauses a
/// moment so that it does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
