//! TLS termination, end to end against the real binary: certificates made
//! in the test (rcgen), real clients (curl, and a rustls client for what
//! curl cannot show: ALPN, the served certificate, one connection kept
//! open across a reload).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost` (its CN tells generations
/// apart), written as PEM files; returns the paths and the DER.
fn certificate(dir: &Path, tag: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("tollgate test {tag}"));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (
        dir.join(format!("{tag}.crt")),
        dir.join(format!("{tag}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k, cert.der().clone())
}

fn tls_config(origin: &str, cert: &Path, key: &Path, extra_tls: &str) -> String {
    config(&format!(
        r#"
[server.tls]
listen = ["127.0.0.1:0"]
cert = "{}"
key = "{}"
{extra_tls}

[components.headers]
source = "builtin:headers"

[[route]]
origin = "{origin}"
middleware = ["headers"]
"#,
        cert.display(),
        key.display()
    ))
}

/// The TLS listener's address, from the gateway's log.
fn tls_addr(gw: &Gateway) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gw.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("\"tls listening\"")) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            return v["fields"]["addr"].as_str().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no TLS listener; log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a log line containing `text` (after `skip` earlier matches).
fn wait_log(gw: &Gateway, text: &str, skip: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.log_text().matches(text).count() <= skip {
        assert!(
            Instant::now() < deadline,
            "no `{text}` in the log:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A rustls client that trusts `root`, offering `alpn`, limited to
/// `versions`.
fn connector(
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

type Stream = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(addr: SocketAddr, tls: &TlsConnector) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The certificate the server presented on `stream`.
fn served(stream: &Stream) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One HTTP/1.1 sender over an open TLS connection.
async fn h1(stream: Stream) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path)
        .header("host", "localhost")
        .header("origin", "https://app.example")
        .header("x-custom", "same")
        .body(Full::default())
        .unwrap()
}

/// Status, response headers and what the origin saw, without what differs
/// per request or per listener (the id, the date, and the scheme and
/// address the forwarding headers report, which are checked apart).
async fn effects(
    res: hyper::Response<hyper::body::Incoming>,
    origin: &Origin,
) -> (u16, BTreeMap<String, String>, BTreeMap<String, String>) {
    let status = res.status().as_u16();
    let mut headers: BTreeMap<String, String> = res
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    res.into_body().collect().await.unwrap();
    for h in ["x-request-id", "date", "content-length", "x-origin-request"] {
        headers.remove(h);
    }
    let mut seen: BTreeMap<String, String> = origin.last().headers.into_iter().collect();
    for h in ["x-request-id", "content-length", "x-forwarded-proto"] {
        seen.remove(h);
    }
    (status, headers, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_over_h1_and_h2_has_the_chain_effects_of_cleartext() {
    let dir = tempdir::TempDir::new();
    let (cert, key, der) = certificate(dir.path(), "a");
    let origin = Origin::start().await;
    let gw = Gateway::start(&tls_config(&origin.url(), &cert, &key, ""));
    let addr = tls_addr(&gw);

    // Cleartext HTTP/1.1, the reference.
    let plain = client()
        .request(
            http::Request::get(gw.url("/items?x=1"))
                .header("host", "localhost")
                .header("origin", "https://app.example")
                .header("x-custom", "same")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let plain = effects(plain, &origin).await;
    assert_eq!(origin.last().headers["x-forwarded-proto"], "http");
    assert_eq!(plain.0, 200);
    assert!(plain.1.contains_key("x-content-type-options"), "{plain:?}");

    // TLS, HTTP/1.1 by ALPN.
    let tls = connect(
        addr,
        &connector(&der, &[b"http/1.1"], rustls::DEFAULT_VERSIONS),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut send = h1(tls).await;
    let res = send.send_request(get("/items?x=1")).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_11);
    let over_h1 = effects(res, &origin).await;
    assert_eq!(origin.last().headers["x-forwarded-proto"], "https");
    assert_eq!(over_h1, plain);

    // TLS, HTTP/2 by ALPN.
    let tls = connect(
        addr,
        &connector(&der, &[b"h2", b"http/1.1"], rustls::DEFAULT_VERSIONS),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost:{}/items?x=1", addr.port()))
        .header("origin", "https://app.example")
        .header("x-custom", "same")
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let mut over_h2 = effects(res, &origin).await;
    assert_eq!(origin.last().headers["x-forwarded-proto"], "https");
    // h2 carries the authority with its port; the others sent a bare host.
    assert_eq!(
        over_h2.2.remove("x-forwarded-host").as_deref(),
        Some(format!("localhost:{}", addr.port()).as_str())
    );
    let mut expected = plain.clone();
    expected.2.remove("x-forwarded-host");
    assert_eq!(over_h2, expected);

    // curl, a client of its own, over both protocols.
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = Command::new("curl")
            .args(["-sS", flag, "--cacert"])
            .arg(&cert)
            .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
            .arg(format!("https://localhost:{}/items", addr.port()))
            .output()
            .expect("curl is installed (.ci/run installs it)");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("200 {version}"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Framing is checked over TLS as well: it never reaches the origin.
    let before = origin.count();
    let out = Command::new("curl")
        .args(["-sS", "--http1.1", "--cacert"])
        .arg(&cert)
        .args(["-X", "CONNECT", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://localhost:{}/items", addr.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
    assert_eq!(origin.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_version_1_3_refuses_tls_1_2() {
    let dir = tempdir::TempDir::new();
    let (cert, key, der) = certificate(dir.path(), "a");
    let origin = Origin::start().await;
    let gw = Gateway::start(&tls_config(
        &origin.url(),
        &cert,
        &key,
        "min_version = \"1.3\"",
    ));
    let addr = tls_addr(&gw);
    let old = connector(&der, &[b"http/1.1"], &[&rustls::version::TLS12]);
    assert!(connect(addr, &old).await.is_err(), "TLS 1.2 was accepted");
    let new = connector(&der, &[b"http/1.1"], &[&rustls::version::TLS13]);
    let mut send = h1(connect(addr, &new).await.unwrap()).await;
    assert_eq!(send.send_request(get("/")).await.unwrap().status(), 200);

    // By default both are served.
    let gw = Gateway::start(&tls_config(&origin.url(), &cert, &key, ""));
    let addr = tls_addr(&gw);
    let mut send = h1(connect(addr, &old).await.unwrap()).await;
    assert_eq!(send.send_request(get("/")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let dir = tempdir::TempDir::new();
    let (cert, key, first) = certificate(dir.path(), "a");
    let origin = Origin::start().await;
    let gw = Gateway::start(&tls_config(&origin.url(), &cert, &key, ""));
    let addr = tls_addr(&gw);
    let hup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &gw.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };

    let open = connect(
        addr,
        &connector(&first, &[b"http/1.1"], rustls::DEFAULT_VERSIONS),
    )
    .await
    .unwrap();
    assert_eq!(served(&open), first);
    let mut kept = h1(open).await;
    assert_eq!(kept.send_request(get("/")).await.unwrap().status(), 200);

    // Renew: new files in place, then SIGHUP.
    let (new_cert, new_key, second) = certificate(dir.path(), "b");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    hup();
    wait_log(&gw, "TLS certificate reloaded", 0);
    let fresh = connect(
        addr,
        &connector(&second, &[b"http/1.1"], rustls::DEFAULT_VERSIONS),
    )
    .await
    .unwrap();
    assert_eq!(served(&fresh), second);
    let mut fresh = h1(fresh).await;
    assert_eq!(fresh.send_request(get("/")).await.unwrap().status(), 200);
    // The connection opened before the reload still works.
    let res = kept.send_request(get("/")).await.unwrap();
    assert_eq!(res.status(), 200);

    // A broken renewal changes nothing: the last good certificate stays.
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    hup();
    wait_log(&gw, "TLS certificate reload failed", 0);
    assert!(
        gw.log_text().contains("server.tls.key"),
        "{}",
        gw.log_text()
    );
    let again = connect(
        addr,
        &connector(&second, &[b"http/1.1"], rustls::DEFAULT_VERSIONS),
    )
    .await
    .unwrap();
    assert_eq!(served(&again), second);
    let mut again = h1(again).await;
    assert_eq!(again.send_request(get("/")).await.unwrap().status(), 200);
}

/// `tollgate serve` on a config, expected to refuse it.
fn refused(dir: &Path, name: &str, text: &str) -> (Option<i32>, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(tollgate_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_tls_config_stops_startup_naming_the_key() {
    let dir = tempdir::TempDir::new();
    let d = dir.path();
    let (cert, key, _) = certificate(d, "a");
    let (_, other_key, _) = certificate(d, "b");
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "this is not PEM").unwrap();
    let missing = d.join("missing.pem");
    let key_text = std::fs::read_to_string(&key).unwrap();
    let secret = key_text
        .lines()
        .find(|l| !l.starts_with("-----"))
        .unwrap()
        .to_owned();

    let origin = "http://127.0.0.1:1";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing certificate file",
            tls_config(origin, &missing, &key, ""),
            "server.tls.cert: cannot read",
        ),
        (
            "certificate that is not PEM",
            tls_config(origin, &junk, &key, ""),
            "server.tls.cert",
        ),
        (
            "key that is not PEM",
            tls_config(origin, &cert, &junk, ""),
            "server.tls.key",
        ),
        (
            "key of another certificate",
            tls_config(origin, &cert, &other_key, ""),
            "server.tls.key: ",
        ),
        (
            "unknown minimum version",
            tls_config(origin, &cert, &key, "min_version = \"1.1\""),
            "server.tls.min_version",
        ),
        (
            "no key",
            config(&format!(
                "[server.tls]\nlisten = [\"127.0.0.1:0\"]\ncert = \"{}\"\n[[route]]\norigin = \"{origin}\"\n",
                cert.display()
            )),
            "server.tls.key: is required",
        ),
        (
            "no TLS listener",
            config(&format!(
                "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n[[route]]\norigin = \"{origin}\"\n",
                cert.display(),
                key.display()
            )),
            "server.tls.listen: needs at least one address",
        ),
    ];
    for (what, text, expected) in cases {
        let (code, stderr) = refused(d, "bad.toml", &text);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{what}: `{expected}` not in {stderr}"
        );
        assert!(!stderr.contains(&secret), "{what}: key material printed");
        assert!(!stderr.contains("BEGIN"), "{what}: PEM printed: {stderr}");
    }
    // The mismatch says so in words.
    let (_, stderr) = refused(d, "bad.toml", &tls_config(origin, &cert, &other_key, ""));
    assert!(stderr.contains("does not match"), "{stderr}");
}
