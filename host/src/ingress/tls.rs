//! TLS termination (rustls): the certificate the TLS listeners serve, read
//! and checked at startup, swapped in place on SIGHUP, and the acceptor
//! that turns a TCP connection into a TLS stream offering ALPN `h2` and
//! `http/1.1`.
//!
//! A certificate is only ever replaced by one that loaded and matched its
//! key: a reload that fails leaves the old certificate serving and says
//! why in one log line. Errors name the config key and the file, never
//! the key material.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[server.tls]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// The addresses that speak TLS.
    pub listen: Vec<std::net::SocketAddr>,
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Whether TLS 1.2 is refused (`min_version = "1.3"`).
    pub tls13_only: bool,
}

/// Why a certificate could not be loaded: the config key at fault and
/// what is wrong (a path and a reason, never file contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        key,
        message: format!("cannot read {}: {}", path.display(), e.kind()),
    })
}

/// Reads the chain and key and checks that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = read("server.tls.cert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError {
            key: "server.tls.cert",
            message: format!("{} is not a PEM certificate chain", cert.display()),
        })?;
    if chain.is_empty() {
        return Err(TlsError {
            key: "server.tls.cert",
            message: format!("{} holds no certificate", cert.display()),
        });
    }
    let pem = read("server.tls.key", key)?;
    let bad_key = || TlsError {
        key: "server.tls.key",
        message: format!(
            "{} is not a PEM private key (PKCS#8, PKCS#1 or SEC1) that rustls supports",
            key.display()
        ),
    };
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| bad_key())?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|_| bad_key())?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| TlsError {
        key: "server.tls.key",
        message: format!(
            "{} does not match the certificate in {}",
            key.display(),
            cert.display()
        ),
    })?;
    Ok(Arc::new(certified))
}

/// The certificate every TLS listener serves; replaced whole on reload.
pub struct Certificate {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    pub fn load(settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: ArcSwap::new(load(&settings.cert, &settings.key)?),
            cert: settings.cert.clone(),
            key: settings.key.clone(),
        }))
    }

    /// Re-reads the files. New handshakes get the new certificate; open
    /// connections keep theirs. On failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert, &self.key)?;
        self.current.store(fresh);
        Ok(())
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The acceptor for every TLS listener: TLS 1.2 (unless refused) and
/// 1.3, ALPN `h2` then `http/1.1`, no client certificates.
pub fn acceptor(cert: Arc<Certificate>, tls13_only: bool) -> TlsAcceptor {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&version::TLS13]
    } else {
        &[&version::TLS13, &version::TLS12]
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Completes the handshake, within [`HANDSHAKE_TIMEOUT`].
pub async fn accept(acceptor: &TlsAcceptor, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Reloads `cert` on every SIGHUP, logging the outcome.
pub fn reload_on_sighup(cert: Arc<Certificate>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler: no certificate reload");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match cert.reload() {
                Ok(()) => tracing::info!(cert = %cert.cert.display(), "TLS certificate reloaded"),
                Err(e) => tracing::error!(
                    error = %e,
                    "TLS certificate reload failed; still serving the previous one"
                ),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair("localhost");
        let c = write(dir.path(), "c.pem", &cert);
        let k = write(dir.path(), "k.pem", &key);
        assert!(load(&c, &k).is_ok());
    }

    #[test]
    fn errors_name_the_key_and_never_the_material() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair("localhost");
        let (_, other_key) = pair("other");
        let c = write(dir.path(), "c.pem", &cert);
        let k = write(dir.path(), "k.pem", &key);
        let other = write(dir.path(), "o.pem", &other_key);
        let junk = write(dir.path(), "j.pem", "not pem at all");
        let missing = dir.path().join("missing.pem");

        let e = load(&missing, &k).unwrap_err();
        assert_eq!(e.key, "server.tls.cert");
        assert!(e.message.contains("cannot read"), "{e}");
        assert_eq!(load(&junk, &k).unwrap_err().key, "server.tls.cert");
        assert_eq!(load(&c, &junk).unwrap_err().key, "server.tls.key");
        // A certificate file given as the key is not a key.
        assert_eq!(load(&c, &c).unwrap_err().key, "server.tls.key");
        let e = load(&c, &other).unwrap_err();
        assert_eq!(e.key, "server.tls.key");
        assert!(e.message.contains("does not match"), "{e}");
        let body = |pem: &str| {
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
        };
        for e in [load(&c, &other).unwrap_err(), load(&c, &junk).unwrap_err()] {
            let text = e.to_string();
            assert!(!text.contains(&body(&other_key)[..40]));
            assert!(!text.contains(&body(&key)[..40]));
        }
    }

    #[test]
    fn a_failed_reload_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair("localhost");
        let settings = TlsSettings {
            listen: Vec::new(),
            cert: write(dir.path(), "c.pem", &cert),
            key: write(dir.path(), "k.pem", &key),
            tls13_only: false,
        };
        let c = Certificate::load(&settings).unwrap();
        let before = c.current.load_full();
        write(dir.path(), "k.pem", "garbage");
        assert!(c.reload().is_err());
        assert!(Arc::ptr_eq(&before, &c.current.load_full()));
        let (cert2, key2) = pair("renewed");
        write(dir.path(), "c.pem", &cert2);
        write(dir.path(), "k.pem", &key2);
        c.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &c.current.load_full()));
    }
}
