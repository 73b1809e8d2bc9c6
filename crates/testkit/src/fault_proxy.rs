//! A TCP proxy the tests put between a service and a real part (Postgres,
//! moto), to cut the network under a running service and heal it again:
//!
//! - [`FaultProxy::break_networking`]: every open connection is reset
//!   (`SO_LINGER` 0, so the peer sees a RST, not a polite FIN) and every new
//!   one is accepted and reset at once — a part that is down.
//! - [`FaultProxy::blackhole`]: connections are still accepted, but nothing
//!   is forwarded in either direction, and open connections go silent — a
//!   part that hangs (a partition, a stuck load balancer). Only timeouts get
//!   a client out of this one, which is what the fault tests check.
//! - [`FaultProxy::restore_networking`]: forwarding again. Connections that
//!   went silent resume where they stopped, as TCP does when a partition
//!   heals; connections accepted during the blackhole connect upstream now.
//!
//! Written on tokio alone, after crates.io's `chaosproxy`.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Refuse,
    Blackhole,
}

/// A proxy on `127.0.0.1:<ephemeral>` forwarding to one upstream address.
/// Dropping it closes the listener and every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// What every connection task sees.
struct Shared {
    mode: watch::Sender<Mode>,
    /// Bytes forwarded from clients to the upstream, over all connections.
    sent_up: AtomicU64,
    /// A cut that lands once `sent_up` reaches the count: a fault in the
    /// middle of a request, at an exact point rather than after a sleep.
    trigger: Mutex<Option<(u64, Mode)>>,
    /// A blackhole that lands on the first byte beyond the count, holding
    /// that byte and what follows until restored: a cut *between* two
    /// requests, after the first one's answer came back.
    hold_from: Mutex<Option<u64>>,
}

impl Shared {
    /// Counts bytes sent upstream and fires a due trigger.
    fn sent(&self, bytes: usize) {
        let total = self.sent_up.fetch_add(bytes as u64, Ordering::SeqCst) + bytes as u64;
        if let Ok(mut trigger) = self.trigger.lock()
            && let Some((at, mode)) = *trigger
            && total >= at
        {
            *trigger = None;
            self.mode.send_replace(mode);
        }
    }
}

impl Shared {
    /// How many of the next `bytes` may go upstream before a `hold_from`
    /// point; reaching it turns the proxy silent.
    fn passable(&self, bytes: usize) -> usize {
        let Ok(mut hold) = self.hold_from.lock() else {
            return bytes;
        };
        let Some(at) = *hold else {
            return bytes;
        };
        let sent = self.sent_up.load(Ordering::SeqCst);
        let room = at.saturating_sub(sent);
        if (bytes as u64) <= room {
            return bytes;
        }
        *hold = None;
        self.mode.send_replace(Mode::Blackhole);
        usize::try_from(room).unwrap_or(bytes)
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("the fault proxy's address");
        let (mode, _) = watch::channel(Mode::Forward);
        let shared = Arc::new(Shared {
            mode,
            sent_up: AtomicU64::new(0),
            trigger: Mutex::new(None),
            hold_from: Mutex::new(None),
        });
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            shared.clone(),
            connections.clone(),
        ));
        FaultProxy {
            addr,
            upstream,
            shared,
            accept,
            connections,
        }
    }

    /// A proxy in front of the host and port of `url` (`postgres://…`,
    /// `http://…`), and `url` rewritten to go through it (user, path and
    /// query kept).
    pub async fn in_front_of(url: &str) -> (FaultProxy, String) {
        let mut parsed = url::Url::parse(url).expect("a URL with a host and port");
        let upstream = parsed
            .socket_addrs(|| None)
            .expect("resolve the upstream of the fault proxy")
            .into_iter()
            .next()
            .expect("the upstream has an address");
        let proxy = FaultProxy::start(upstream).await;
        parsed
            .set_host(Some("127.0.0.1"))
            .expect("URL takes a host");
        parsed
            .set_port(Some(proxy.addr.port()))
            .expect("URL takes a port");
        (proxy, parsed.to_string())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resets every open connection and every new one, until restored.
    pub fn break_networking(&self) {
        self.set(Mode::Refuse);
    }

    /// Accepts connections but forwards nothing either way, until restored.
    pub fn blackhole(&self) {
        self.set(Mode::Blackhole);
    }

    /// Forwards again (and forgets a pending `*_after`).
    pub fn restore_networking(&self) {
        self.set(Mode::Forward);
    }

    /// [`break_networking`](Self::break_networking) once `bytes` more bytes
    /// have gone from clients to the upstream: a cut in mid-request.
    pub fn break_after(&self, bytes: u64) {
        self.arm(bytes, Mode::Refuse);
    }

    /// [`blackhole`](Self::blackhole) once `bytes` more bytes have gone
    /// from clients to the upstream.
    pub fn blackhole_after(&self, bytes: u64) {
        self.arm(bytes, Mode::Blackhole);
    }

    /// [`blackhole`](Self::blackhole) on the first byte beyond `bytes` more
    /// from clients: everything up to it is forwarded (and answered), the
    /// rest waits until restored. Cuts between one request and the next.
    pub fn blackhole_from(&self, bytes: u64) {
        if let Ok(mut hold) = self.shared.hold_from.lock() {
            *hold = Some(self.shared.sent_up.load(Ordering::SeqCst) + bytes);
        }
    }

    /// Bytes forwarded from clients to the upstream so far.
    pub fn bytes_sent_upstream(&self) -> u64 {
        self.shared.sent_up.load(Ordering::SeqCst)
    }

    fn set(&self, mode: Mode) {
        if let Ok(mut trigger) = self.shared.trigger.lock() {
            *trigger = None;
        }
        if let Ok(mut hold) = self.shared.hold_from.lock() {
            *hold = None;
        }
        self.shared.mode.send_replace(mode);
    }

    fn arm(&self, bytes: u64, mode: Mode) {
        if let Ok(mut trigger) = self.shared.trigger.lock() {
            *trigger = Some((self.shared.sent_up.load(Ordering::SeqCst) + bytes, mode));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(connections) = self.connections.lock() {
            for connection in connections.iter() {
                connection.abort();
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let task = tokio::spawn(connection(client, upstream, shared.clone()));
        if let Ok(mut connections) = connections.lock() {
            connections.retain(|c| !c.is_finished());
            connections.push(task);
        }
    }
}

/// Closes the socket with a RST: with `SO_LINGER` 0 the kernel drops the
/// buffers and resets instead of the orderly FIN, as a crashed peer or a
/// firewall would.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// One client connection, from accept to close.
async fn connection(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut mode = shared.mode.subscribe();
    // Wait out a blackhole before connecting upstream: the client sees an
    // accepted connection that never answers.
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Forward => break,
            Mode::Refuse => return reset(client),
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
        }
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return reset(client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    forward(client, server, mode, &shared).await;
}

/// Copies bytes both ways while the mode is `Forward`, stops reading while
/// it is `Blackhole` (bytes wait in the kernel buffers, as they would on a
/// partitioned link) and resets both sides on `Refuse`.
async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    mut mode: watch::Receiver<Mode>,
    shared: &Shared,
) {
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    let (mut client_open, mut server_open) = (true, true);
    // Bytes read from the client but held back by a `hold_from` point.
    let mut held: Vec<u8> = Vec::new();
    while client_open || server_open {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Refuse => {
                reset(client);
                reset(server);
                return;
            }
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            Mode::Forward if !held.is_empty() => {
                if server.write_all(&held).await.is_err() {
                    return reset(client);
                }
                shared.sent(held.len());
                held.clear();
            }
            Mode::Forward => {
                // Biased: a change of mode wins over bytes that are ready, so
                // nothing slips through after `break_networking`/`blackhole`.
                tokio::select! {
                    biased;
                    changed = mode.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    read = client.read(&mut from_client), if client_open => match read {
                        Ok(0) => {
                            client_open = false;
                            let _ = server.shutdown().await;
                        }
                        Ok(n) => {
                            let pass = shared.passable(n);
                            if server.write_all(&from_client[..pass]).await.is_err() {
                                return reset(client);
                            }
                            shared.sent(pass);
                            held.extend_from_slice(&from_client[pass..n]);
                        }
                        Err(_) => return reset(server),
                    },
                    read = server.read(&mut from_server), if server_open => match read {
                        Ok(0) => {
                            server_open = false;
                            let _ = client.shutdown().await;
                        }
                        Ok(n) => {
                            if client.write_all(&from_server[..n]).await.is_err() {
                                return reset(server);
                            }
                        }
                        Err(_) => return reset(client),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut back = vec![0u8; message.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    /// Bytes that do not come back within a short while. Only an answer
    /// fails this, so it cannot pass by being slow.
    async fn stays_silent(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte))
            .await
            .is_err()
    }

    /// A closed connection: a reset, or an end of stream, but no data.
    async fn is_cut(stream: &mut TcpStream) -> bool {
        let _ = stream.write_all(b"x").await;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    #[tokio::test]
    async fn forwards_both_ways() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.url(), format!("http://{}", proxy.addr()));
    }

    #[tokio::test]
    async fn break_resets_open_and_new_connections_until_restored() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open, b"before").await.unwrap();

        proxy.break_networking();
        let mut byte = [0u8; 1];
        let read = open.read(&mut byte).await;
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "an open connection is reset, not closed politely: {read:?}"
        );
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(is_cut(&mut new).await, "a new connection is cut");

        proxy.restore_networking();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"after").await.unwrap(), b"after");
    }

    #[tokio::test]
    async fn blackhole_forwards_nothing_and_restore_resumes() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open, b"before").await.unwrap();

        proxy.blackhole();
        open.write_all(b"lost?").await.unwrap();
        assert!(
            stays_silent(&mut open).await,
            "an open connection goes silent"
        );
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        new.write_all(b"hello").await.unwrap();
        assert!(
            stays_silent(&mut new).await,
            "a new connection is accepted, then silent"
        );

        proxy.restore_networking();
        // Held bytes go through once the link heals, on both connections.
        let mut back = [0u8; 5];
        open.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"lost?");
        new.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        assert_eq!(round_trip(&mut open, b"after").await.unwrap(), b"after");
    }

    #[tokio::test]
    async fn break_after_blackhole_resets_the_silent_connections() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open, b"before").await.unwrap();
        proxy.blackhole();
        let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.break_networking();
        assert!(is_cut(&mut open).await);
        assert!(is_cut(&mut held).await);
    }

    #[tokio::test]
    async fn a_cut_can_land_after_a_number_of_bytes() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.blackhole_after(10);
        assert_eq!(round_trip(&mut stream, b"12345").await.unwrap(), b"12345");
        stream.write_all(b"6789012345").await.unwrap();
        // The bytes that crossed the count went up, but their echo is held.
        let mut back = [0u8; 10];
        let mut got = 0;
        while got < 10 {
            match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut back[got..]))
                .await
            {
                Ok(Ok(n)) if n > 0 => got += n,
                _ => break,
            }
        }
        assert!(got < 10, "the echo after the cut came back");
        assert_eq!(proxy.bytes_sent_upstream(), 15);
        proxy.restore_networking();
        stream.read_exact(&mut back[got..]).await.unwrap();
        assert_eq!(&back, b"6789012345");
    }

    #[tokio::test]
    async fn a_hold_point_lets_the_first_request_finish_and_holds_the_next() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.blackhole_from(5);
        // Up to the point: forwarded and answered.
        assert_eq!(round_trip(&mut stream, b"12345").await.unwrap(), b"12345");
        // Beyond it: nothing goes up, nothing comes back.
        stream.write_all(b"678").await.unwrap();
        assert!(stays_silent(&mut stream).await);
        assert_eq!(proxy.bytes_sent_upstream(), 5);
        proxy.restore_networking();
        let mut back = [0u8; 3];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"678");
        assert_eq!(proxy.bytes_sent_upstream(), 8);
    }

    #[tokio::test]
    async fn rewrites_a_url_to_go_through_the_proxy() {
        let upstream = echo_server().await;
        let url = format!("postgres://postgres@{upstream}/canvas_test_x?sslmode=disable");
        let (proxy, proxied) = FaultProxy::in_front_of(&url).await;
        assert_eq!(proxy.upstream(), upstream);
        assert_eq!(
            proxied,
            format!(
                "postgres://postgres@127.0.0.1:{}/canvas_test_x?sslmode=disable",
                proxy.addr().port()
            )
        );
    }
}
