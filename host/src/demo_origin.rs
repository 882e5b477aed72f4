//! A tiny origin service bundled for the out-of-the-box demo: it answers
//! every request with a JSON echo of what it received (method, path and
//! headers), so a user can see what the chain changed. With `--fixed` it is
//! the load test's fast origin: a fixed 3-byte body. With `--delay-ms` it
//! answers late, which shows what `least-request` balancing does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Serves the demo origin on `addr` until the process exits. With `fixed`,
/// every answer is the same 3-byte body: the load test's fast origin.
/// Every answer waits `delay` first.
pub async fn run(addr: SocketAddr, fixed: bool, delay: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("demo origin: cannot bind {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "demo origin listening");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if fixed {
                        return Ok::<_, Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok\n"),
                        )));
                    }
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let headers: serde_json::Map<String, serde_json::Value> = parts
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                            )
                        })
                        .collect();
                    let echo = serde_json::json!({
                        "origin": "tollgate-demo",
                        "method": parts.method.as_str(),
                        "path": parts.uri.to_string(),
                        "headers": headers,
                        "body_bytes": body.len(),
                    });
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .header("server", "tollgate-demo-origin")
                            .body(Full::new(Bytes::from(format!("{echo:#}\n"))))
                            .expect("valid response"),
                    )
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
