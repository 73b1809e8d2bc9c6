//! `common::http::serve_on`, the server both services run, on 127.0.0.1:0
//! with raw TCP clients: every request carries its peer address; clients
//! that stall in their headers, send nothing, or stall in their body are cut
//! at the deadline; the graceful shutdown lets a request in flight finish
//! and is not held by stalled clients.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, State},
    routing::{get, post},
};
use common::{
    ApiError,
    config::{Env, RequestDeadlines},
    extract::ApiJson,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{Notify, oneshot},
    task::JoinHandle,
};

/// Bounds a wait that must end on its own; reaching it fails the test.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Lets a test hold a request in its handler: `entered` is notified when
/// the handler runs, which then waits for `release`.
#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

fn router(gate: Arc<Gate>) -> Router {
    Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/json",
            post(|ApiJson(value): ApiJson<serde_json::Value>| async move {
                Ok::<_, ApiError>(value.to_string())
            }),
        )
        .route(
            "/held",
            get(|State(gate): State<Arc<Gate>>| async move {
                gate.entered.notify_one();
                gate.release.notified().await;
                "released"
            }),
        )
        .with_state(gate)
}

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<bool>,
    gate: Arc<Gate>,
}

/// The server with REQUEST_TIMEOUT_SECONDS=1.
async fn start() -> Server {
    let deadlines =
        RequestDeadlines::from_env(&Env::from_pairs([("REQUEST_TIMEOUT_SECONDS", "1")]))
            .expect("valid deadlines");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let gate = Arc::new(Gate::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(common::http::serve_on(
        listener,
        router(gate.clone()),
        deadlines,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(60),
    ));
    Server {
        addr,
        stop,
        task,
        gate,
    }
}

impl Server {
    /// Starts the graceful shutdown; the task ends when the server has.
    fn shut_down(self) -> JoinHandle<bool> {
        let _ = self.stop.send(());
        self.task
    }
}

/// Everything received until the server closes (a reset counts as closing).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

async fn closed_within_guard(stream: &mut TcpStream) -> String {
    tokio::time::timeout(HANG_GUARD, read_until_closed(stream))
        .await
        .expect("the server closes the connection")
}

#[tokio::test]
async fn requests_carry_the_peer_address() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let me = stream.local_addr().expect("our address");
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let response = closed_within_guard(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(&format!("\r\n\r\n{me}")), "{response}");
}

#[tokio::test]
async fn headers_that_never_end_are_closed_unanswered() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("send");
    // Keeps sending header bytes: the timeout is on the whole head, not
    // on silence.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        while writer.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let received = tokio::time::timeout(HANG_GUARD, async {
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    trickle.abort();
    let received = String::from_utf8_lossy(&received);
    assert!(!received.contains(" 200 "), "{received}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(closed_within_guard(&mut stream).await, "");
}

#[tokio::test]
async fn a_stalled_json_body_is_408_naming_the_setting() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":",
        )
        .await
        .expect("send");
    let response = closed_within_guard(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains(
            r#"{"detail":"the request was not received within 1 s (REQUEST_TIMEOUT_SECONDS)"}"#
        ),
        "{response}"
    );
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_is_not_held_by_stalled_clients() {
    let server = start().await;
    let addr = server.addr;
    // A request in its handler when the shutdown starts…
    let mut in_flight = TcpStream::connect(addr).await.expect("connect");
    in_flight
        .write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    server.gate.entered.notified().await;
    // …and clients stalled in their headers, in their body, or idle.
    let mut in_headers = TcpStream::connect(addr).await.expect("connect");
    in_headers
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    let mut in_body = TcpStream::connect(addr).await.expect("connect");
    in_body
        .write_all(
            b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .expect("send");
    let mut silent = TcpStream::connect(addr).await.expect("connect");

    let gate = server.gate.clone();
    let stopped = server.shut_down();
    // The request in flight still gets its answer.
    gate.release.notify_one();
    let answered = closed_within_guard(&mut in_flight).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(answered.ends_with("released"), "{answered}");
    // The stalled ones are cut at their deadline, and then the server stops.
    let body_cut = closed_within_guard(&mut in_body).await;
    assert!(body_cut.starts_with("HTTP/1.1 408"), "{body_cut}");
    assert!(!closed_within_guard(&mut in_headers).await.contains(" 200 "));
    assert_eq!(closed_within_guard(&mut silent).await, "");
    tokio::time::timeout(HANG_GUARD, stopped)
        .await
        .expect("the server stops")
        .expect("cleanly");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
