//! The connection phase of the ingress: accepts on every listener,
//! terminates TLS on the TLS ones ([`super::tls`]), serves HTTP/1.1 and
//! HTTP/2 (by ALPN over TLS, by prior knowledge over cleartext) through
//! hyper-util's auto builder with the same limits per request and per
//! stream, and on shutdown stops accepting and drains in-flight requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::request::{ResponseBody, handle};
use super::{compression, tls};
use crate::config::Limits;
use crate::gateway::Gateway;

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most concurrent streams one HTTP/2 connection may open.
const H2_MAX_STREAMS: u32 = 128;

/// Streams a client may open and reset before the server has accepted
/// them; beyond this the connection is closed with GOAWAY
/// (ENHANCE_YOUR_CALM): the rapid-reset attack, CVE-2023-44487.
const H2_MAX_PENDING_RESETS: usize = 20;

/// A bound socket, and the TLS it speaks (none: cleartext).
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// The running gateway, swapped whole by a reload: each request takes the
/// one current when it arrives and keeps it to the end.
pub type Live = Arc<arc_swap::ArcSwap<Gateway>>;

/// Binds `addr` `n` times with `SO_REUSEPORT`, one socket per I/O worker,
/// so that the kernel spreads connections over the workers. Port 0 is
/// resolved by the first bind and reused by the others.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(1024)?;
        let l: std::net::TcpListener = socket.into();
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// A listener bound once per worker, and the TLS it speaks.
pub struct Bound {
    pub sockets: Vec<std::net::TcpListener>,
    pub tls: Option<TlsAcceptor>,
}

/// Serves on `workers` threads, each with a single-threaded runtime of
/// its own and one socket of each listener (nginx's model): a
/// connection, its requests and the origin connections they use stay on
/// one thread, with no cross-thread wake-ups. Returns once every worker
/// has drained after `shutdown`.
pub async fn serve_workers(
    live: Live,
    bound: Vec<Bound>,
    workers: usize,
    shutdown: watch::Receiver<bool>,
) {
    let mut per_worker: Vec<Vec<(std::net::TcpListener, Option<TlsAcceptor>)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for b in bound {
        for (i, s) in b.sockets.into_iter().enumerate() {
            per_worker[i % workers].push((s, b.tls.clone()));
        }
    }
    let mut done = Vec::new();
    for (i, sockets) in per_worker.into_iter().enumerate() {
        let (live, shutdown) = (live.clone(), shutdown.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("tollgate-io-{i}"))
            .spawn(move || {
                crate::egress::client::set_worker(i + 1);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("starting an I/O worker's runtime");
                rt.block_on(async move {
                    let listeners = sockets
                        .into_iter()
                        .map(|(s, tls)| Listener {
                            tcp: TcpListener::from_std(s).expect("a bound socket"),
                            tls,
                        })
                        .collect();
                    serve(live, listeners, shutdown).await;
                });
                let _ = tx.send(());
            })
            .expect("starting an I/O worker");
        done.push(rx);
    }
    for rx in done {
        let _ = rx.await;
    }
}

/// Serves `listeners` until `shutdown` flips, then drains in-flight
/// requests for up to the configured grace period.
pub async fn serve(live: Live, listeners: Vec<Listener>, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    type Accepted = (TcpStream, SocketAddr, Option<TlsAcceptor>);
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<Accepted>(1024);
    let mut accept_tasks = Vec::new();
    for Listener { tcp, tls } in listeners {
        let tx = conn_tx.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                match tcp.accept().await {
                    Ok((stream, peer)) => {
                        if tx.send((stream, peer, tls.clone())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    drop(conn_tx);

    // Connection-level limits are set at startup; a reload changes the
    // per-request checks (in `request.rs`), not hyper's own buffers.
    let builder = connection_builder(&live.load().limits);
    loop {
        tokio::select! {
            conn = conn_rx.recv() => {
                let Some((stream, peer, tls)) = conn else { break };
                let _ = stream.set_nodelay(true);
                let live = live.clone();
                let scheme = if tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
                let svc = tower::ServiceBuilder::new()
                    .map_response(compression::boxed)
                    .layer(compression::layer())
                    .service(Ingress { live, peer, scheme });
                let svc = TowerToHyperService::new(svc);
                // TLS handshakes run on the connection's own task, so a
                // slow client never holds up accepting.
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let served = match tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            watcher.watch(conn.into_owned()).await
                        }
                        Some(acceptor) => {
                            let Some(stream) = tls::accept(&acceptor, stream).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            watcher.watch(conn.into_owned()).await
                        }
                    };
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }

    // Stop accepting: closing the listeners makes new connections fail.
    for t in &accept_tasks {
        t.abort();
    }
    for t in accept_tasks {
        let _ = t.await;
    }
    drop(conn_rx);
    let gateway = live.load_full();
    gateway
        .metrics
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down: draining in-flight requests");
    match tokio::time::timeout(gateway.shutdown_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("shutdown grace period ended with connections still open"),
    }
}

/// One connection's request handler, as a tower service so that the
/// compression layer can wrap it.
#[derive(Clone)]
struct Ingress {
    live: Live,
    peer: SocketAddr,
    scheme: Scheme,
}

impl tower::Service<Request<Incoming>> for Ingress {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (gw, peer, scheme) = (self.live.load_full(), self.peer, self.scheme.clone());
        Box::pin(async move { Ok(handle(gw, peer, scheme, req).await) })
    }
}

/// Serves HTTP/1.1, and HTTP/2 to clients that open with its preface
/// (prior knowledge, h2c, or after ALPN `h2`), with the same limits per
/// request and stream.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let max_buf = hyper_buffer(limits);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(max_buf)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_header_list_size(max_buf as u32);
    builder
}

/// hyper's own cap on the request head. It is above our limit so that our
/// check, with its problem+json answer, is what clients normally meet.
fn hyper_buffer(limits: &Limits) -> usize {
    (limits.max_header_bytes * 2 + 4096).max(8192)
}
