//! TLS for the gRPC port: a certificate and key from PEM files, optionally a CA whose client
//! certificates are required, all re-read when the files change.
//!
//! Connections are accepted here rather than by tonic's own TLS setting, so that each new
//! connection is served with the configuration in force when it arrives: a renewed certificate
//! is used without a restart, and open connections keep theirs.

use crate::config::Config;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most handshakes under way at once; a connection past it is closed at once, so that
/// clients that connect and send nothing cannot hold every file descriptor.
const MAX_HANDSHAKES: usize = 1024;

/// The files TLS is configured from.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files `config` names: none (plaintext), or a certificate and its key, and maybe a
    /// client CA. Anything else is a configuration mistake.
    pub(crate) fn of(config: &Config) -> Result<Option<Self>, String> {
        match (&config.tls_cert, &config.tls_key, &config.tls_client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), client_ca) => {
                Ok(Some(Self { cert: cert.clone(), key: key.clone(), client_ca: client_ca.clone() }))
            }
            (None, None, Some(_)) => Err("--tls-client-ca needs --tls-cert and --tls-key".into()),
            _ => Err("TLS needs both --tls-cert and --tls-key".into()),
        }
    }

    /// The files' contents, to tell whether they changed.
    fn read(&self) -> Result<Vec<Vec<u8>>, String> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        let mut contents = vec![read(&self.cert)?, read(&self.key)?];
        if let Some(ca) = &self.client_ca {
            contents.push(read(ca)?);
        }
        Ok(contents)
    }

    /// The server configuration the files' `contents` make. Errors name the file, never a
    /// key's bytes.
    fn server_config(&self, contents: &[Vec<u8>]) -> Result<ServerConfig, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&contents[0])
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: not a PEM certificate chain: {e}", self.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate in it", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_slice(&contents[1])
            .map_err(|_| format!("{}: no PEM private key in it", self.key.display()))?;
        let builder = ServerConfig::builder();
        let builder = match (&self.client_ca, contents.get(2)) {
            (Some(path), Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
                    roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            format!("{} and {} do not make a server identity: {e}", self.cert.display(), self.key.display())
        })?;
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// The TLS configuration in force, and what it was made from.
pub(crate) struct Tls {
    files: TlsFiles,
    /// The configuration in force, and the SHA-256 digest of the files it was made from (the
    /// key's bytes are not kept).
    current: RwLock<(Arc<ServerConfig>, [u8; 32])>,
}

/// One digest of all the files' contents, to tell whether any changed.
fn digest(contents: &[Vec<u8>]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for content in contents {
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content);
    }
    hasher.finalize().into()
}

impl Tls {
    /// Reads the files; a mistake in them stops the start.
    pub(crate) fn load(files: TlsFiles) -> Result<Self, String> {
        let contents = files.read()?;
        let config = files.server_config(&contents)?;
        Ok(Self { files, current: RwLock::new((Arc::new(config), digest(&contents))) })
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(PoisonError::into_inner).0.clone())
    }

    /// Every `every`, reads the files again and puts a changed, valid configuration in force for
    /// new connections. Files that cannot be read or do not fit together are logged, and the
    /// configuration in force stays.
    pub(crate) async fn follow(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let contents = match self.files.read() {
                Ok(contents) => contents,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the TLS files; the certificate in force stays");
                    continue;
                }
            };
            let now = digest(&contents);
            if self.current.read().unwrap_or_else(PoisonError::into_inner).1 == now {
                continue;
            }
            match self.files.server_config(&contents) {
                Ok(config) => {
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = (Arc::new(config), now);
                    tracing::info!("TLS certificate reloaded");
                }
                Err(e) => {
                    // Retried at every check until the files are valid: a certificate and key
                    // replaced one after the other are briefly a mismatched pair.
                    tracing::error!(error = %e, "the TLS files are not valid; the certificate in force stays");
                }
            }
        }
    }

    /// The TLS connections made on `listener`: each accepted, then its handshake run apart (so a
    /// slow client holds up nobody else), at most [`HANDSHAKE_TIMEOUT`] and [`MAX_HANDSHAKES`] at
    /// once. Failed handshakes are logged at debug and dropped. Accepting stops when the server
    /// stops reading the stream, or when the returned task is aborted.
    pub(crate) fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> (tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(64);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors, say: wait a little rather than spin.
                            tracing::warn!(error = %e, "cannot accept a connection");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    () = tx.closed() => return,
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "too many TLS handshakes under way: connection closed");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (self.acceptor(), tx.clone());
                tokio::spawn(async move {
                    let handshake = async {
                        let stream = acceptor.accept(tcp).await?;
                        drop(permit);
                        // Waits while the server is busy taking the connections before it.
                        let _ = tx.send(Ok(stream)).await;
                        Ok::<_, std::io::Error>(())
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        (tokio_stream::wrappers::ReceiverStream::new(rx), task)
    }
}
