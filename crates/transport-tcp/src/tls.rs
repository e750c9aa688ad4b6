//! `tls://host:port`: TCP carrying TLS, with rustls.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use botbus_core::{Endpoint, Link, LinkReader, LinkWriter, Listener, Transport, TransportError};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::{accept, bind, connect, describe, host_port, io_error, TLS_SCHEME};

/// Why a TLS configuration could not be made: always names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A file could not be read or holds no PEM item of the kind wanted.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificates or key as given.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("TLS client certificates: {0}")]
    ClientAuth(String),
}

/// What a node presents and whom it trusts, over TLS. Every piece comes
/// from a PEM file.
///
/// * **Listening** needs an identity: the certificate chain and private key
///   this node presents ([`TlsConfig::identity`]). With
///   [`TlsConfig::require_client_certs`] it also refuses any client whose
///   certificate the given authority did not sign (mutual TLS).
/// * **Connecting** needs the authorities that signed the listeners'
///   certificates ([`TlsConfig::trust`]); the certificate must name the
///   endpoint's host (a DNS name or an IP address). Give an identity too
///   when the listener requires client certificates.
#[derive(Clone, Default)]
pub struct TlsConfig {
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    trusted: Vec<CertificateDer<'static>>,
    client_authorities: Option<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("identity", &self.identity.as_ref().map(|(chain, _)| chain.len()))
            .field("trusted", &self.trusted.len())
            .field("client_authorities", &self.client_authorities.as_ref().map(Vec::len))
            .finish()
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let fail = |reason: String| TlsConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certificates.is_empty() {
        return Err(fail("no PEM certificate in the file".to_owned()));
    }
    Ok(certificates)
}

impl TlsConfig {
    /// Presents the certificate chain in `certificate` (PEM, leaf first)
    /// with the private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn identity(mut self, certificate: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        let chain = certificates(certificate.as_ref())?;
        let key_path = key.as_ref();
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsConfigError::File {
            path: key_path.to_owned(),
            reason: format!("no usable PEM private key: {e}"),
        })?;
        self.identity = Some((chain, Arc::new(key)));
        Ok(self)
    }

    /// Trusts listeners whose certificate an authority in `authorities`
    /// (PEM, one or more) signed — or that is one of them, self-signed.
    pub fn trust(mut self, authorities: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        self.trusted.extend(certificates(authorities.as_ref())?);
        Ok(self)
    }

    /// When listening, accepts only clients presenting a certificate that an
    /// authority in `authorities` (PEM) signed.
    pub fn require_client_certs(mut self, authorities: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        self.client_authorities = Some(certificates(authorities.as_ref())?);
        Ok(self)
    }

    /// Whether listeners made with this configuration require client
    /// certificates.
    pub fn requires_client_certs(&self) -> bool {
        self.client_authorities.is_some()
    }
}

fn roots(certificates: &[CertificateDer<'static>]) -> Result<RootCertStore, rustls::Error> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate.clone())?;
    }
    Ok(roots)
}

/// Links nodes over TLS (rustls, with the *ring* provider; TLS 1.2 and 1.3).
#[derive(Clone)]
pub struct TlsTransport {
    acceptor: Option<TlsAcceptor>,
    connector: Option<TlsConnector>,
    client_certs: bool,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("listens", &self.acceptor.is_some())
            .field("connects", &self.connector.is_some())
            .field("client_certs", &self.client_certs)
            .finish()
    }
}

impl TlsTransport {
    /// A transport that listens if `config` has an identity and connects if
    /// it trusts an authority.
    pub fn new(config: TlsConfig) -> Result<Self, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let acceptor = match &config.identity {
            None => None,
            Some((chain, key)) => {
                let builder =
                    ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
                let builder = match &config.client_authorities {
                    None => builder.with_no_client_auth(),
                    Some(authorities) => {
                        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                            Arc::new(roots(authorities)?),
                            provider.clone(),
                        )
                        .build()
                        .map_err(|e| TlsConfigError::ClientAuth(e.to_string()))?;
                        builder.with_client_cert_verifier(verifier)
                    }
                };
                let server = builder.with_single_cert(chain.clone(), key.clone_key())?;
                Some(TlsAcceptor::from(Arc::new(server)))
            }
        };
        let connector = match config.trusted.is_empty() {
            true => None,
            false => {
                let builder = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots(&config.trusted)?);
                let client = match &config.identity {
                    Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key())?,
                    None => builder.with_no_client_auth(),
                };
                Some(TlsConnector::from(Arc::new(client)))
            }
        };
        Ok(Self {
            acceptor,
            connector,
            client_certs: config.client_authorities.is_some(),
        })
    }

    /// Whether its listeners require client certificates.
    pub fn requires_client_certs(&self) -> bool {
        self.client_certs
    }
}

/// Where a TLS link stands: TCP connected, TLS still to be done by
/// [`Link::open`]; or open.
enum State {
    Connecting {
        tcp: TcpStream,
        connector: TlsConnector,
        server: ServerName<'static>,
    },
    Accepting {
        tcp: TcpStream,
        acceptor: TlsAcceptor,
    },
    Open(Box<TlsStream<TcpStream>>),
    Failed,
}

/// One link over TLS.
pub struct TlsLink {
    state: State,
    peer: String,
}

impl fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Connecting { .. } | State::Accepting { .. } => "tls handshake to do",
            State::Open(_) => "open",
            State::Failed => "failed",
        };
        f.debug_struct("TlsLink")
            .field("peer", &self.peer)
            .field("state", &state)
            .finish()
    }
}

impl TlsLink {
    fn new(tcp: TcpStream, peer: String, state: impl FnOnce(TcpStream) -> State) -> Self {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        Self {
            state: state(tcp),
            peer,
        }
    }
}

#[async_trait]
impl Link for TlsLink {
    fn peer(&self) -> String {
        self.peer.clone()
    }

    async fn open(&mut self) -> Result<(), TransportError> {
        let opened = match std::mem::replace(&mut self.state, State::Failed) {
            State::Connecting { tcp, connector, server } => connector.connect(server, tcp).await.map(TlsStream::from),
            State::Accepting { tcp, acceptor } => acceptor.accept(tcp).await.map(TlsStream::from),
            open @ State::Open(_) => {
                self.state = open;
                return Ok(());
            }
            State::Failed => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed before",
            )),
        };
        match opened {
            Ok(stream) => {
                self.state = State::Open(Box::new(stream));
                Ok(())
            }
            Err(error) => Err(TransportError::Io {
                endpoint: self.peer.clone(),
                source: io::Error::new(error.kind(), format!("TLS handshake failed: {error}")),
            }),
        }
    }

    fn split(self: Box<Self>) -> (LinkReader, LinkWriter) {
        match self.state {
            State::Open(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (Box::pin(read), Box::pin(write))
            }
            // Not opened: the link reads as closed, and what is written to
            // it goes nowhere; the handshake above fails at once.
            _ => (Box::pin(tokio::io::empty()), Box::pin(tokio::io::sink())),
        }
    }
}

/// Accepts TLS links at one address; each link's TLS handshake runs in its
/// own [`Link::open`], never here.
pub struct TlsListener {
    endpoint: Endpoint,
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener").field("endpoint", &self.endpoint).finish()
    }
}

#[async_trait]
impl Listener for TlsListener {
    fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    async fn accept(&mut self) -> Result<Box<dyn Link>, TransportError> {
        let (tcp, from) = accept(&self.listener, &self.endpoint).await?;
        let acceptor = self.acceptor.clone();
        Ok(Box::new(TlsLink::new(tcp, describe(TLS_SCHEME, from), |tcp| {
            State::Accepting { tcp, acceptor }
        })))
    }
}

#[async_trait]
impl Transport for TlsTransport {
    fn scheme(&self) -> &'static str {
        TLS_SCHEME
    }

    fn authenticates_peers(&self) -> bool {
        self.client_certs
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Link>, TransportError> {
        let (host, port) = host_port(endpoint, TLS_SCHEME)?;
        let connector = self.connector.clone().ok_or_else(|| {
            io_error(
                endpoint,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this TLS transport trusts no certificate authority (TlsConfig::trust)",
                ),
            )
        })?;
        let server = ServerName::try_from(host.to_owned()).map_err(|e| {
            io_error(
                endpoint,
                io::Error::new(io::ErrorKind::InvalidInput, format!("not a TLS server name: {e}")),
            )
        })?;
        let tcp = connect(endpoint, host, port).await?;
        Ok(Box::new(TlsLink::new(tcp, endpoint.to_string(), |tcp| {
            State::Connecting { tcp, connector, server }
        })))
    }

    async fn listen(&self, endpoint: &Endpoint) -> Result<Box<dyn Listener>, TransportError> {
        let acceptor = self.acceptor.clone().ok_or_else(|| {
            io_error(
                endpoint,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a TLS listener needs a certificate and key (TlsConfig::identity)",
                ),
            )
        })?;
        let (listener, bound) = bind(endpoint, TLS_SCHEME).await?;
        Ok(Box::new(TlsListener {
            endpoint: bound,
            listener,
            acceptor,
        }))
    }
}
