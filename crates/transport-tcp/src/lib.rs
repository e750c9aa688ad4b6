//! # botbus-transport-tcp
//!
//! The `tcp` and `tls` transports: nodes on other machines.
//!
//! Like every botbus transport crate it exports a scheme constant
//! ([`TCP_SCHEME`]), a transport ([`TcpTransport`]) and a link ([`TcpLink`]) —
//! and the same trio for TLS ([`TLS_SCHEME`], [`TlsTransport`], [`TlsLink`]).
//! Both move bytes only: the handshake (with its token authentication),
//! framing, liveness and routing above them are the same code for every
//! transport.
//!
//! * `tcp://host:port` — IPv4, IPv6 in brackets (`tcp://[::1]:7000`) or a host
//!   name. Port 0 when listening asks the system for one; the listener's
//!   [`Listener::endpoint`] tells which. `TCP_NODELAY` is set on every
//!   connection: botbus batches its own writes, so Nagle's algorithm would
//!   only add latency.
//! * `tls://host:port` — the same, carrying TLS 1.2/1.3 (rustls). A
//!   connecting side checks the listener's certificate against the host
//!   name or IP address of the endpoint; a listener may require client
//!   certificates (mutual TLS). See [`TlsConfig`].
//!
//! Accepting never waits for the peer: [`Listener::accept`] returns as soon
//! as the connection exists, and TLS's own handshake runs in [`Link::open`],
//! on the node's task for that connection, under the link's handshake
//! deadline — so a peer that connects and stalls holds up nobody else.
//!
//! ```
//! use botbus_core::{Endpoint, Link, Listener, Transport};
//! use botbus_transport_tcp::{TcpTransport, TCP_SCHEME};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let mut listener = TcpTransport.listen(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
//! let bound: Endpoint = listener.endpoint(); // the real port
//! assert_eq!(bound.scheme(), TCP_SCHEME);
//! let (there, here) = tokio::join!(listener.accept(), TcpTransport.connect(&bound));
//! let (mut read, _keep) = there.unwrap().split();
//! let (_, mut write) = here.unwrap().split();
//! write.write_all(b"hi").await.unwrap();
//! let mut got = [0; 2];
//! read.read_exact(&mut got).await.unwrap();
//! assert_eq!(&got, b"hi");
//! # });
//! ```

mod tls;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use botbus_core::transport::AcceptError;
use botbus_core::{Endpoint, Link, LinkReader, LinkWriter, Listener, Transport, TransportError};
use tokio::net::TcpStream;

pub use tls::{TlsConfig, TlsConfigError, TlsLink, TlsListener, TlsTransport};

/// The endpoint scheme [`TcpTransport`] serves.
pub const TCP_SCHEME: &str = botbus_core::TCP_SCHEME;

/// The endpoint scheme [`TlsTransport`] serves.
pub const TLS_SCHEME: &str = botbus_core::TLS_SCHEME;

/// Links nodes over plain TCP. Pair it with a token
/// ([`LinkConfig::token`](https://docs.rs/botbus-actors)) anywhere but on
/// loopback, or use [`TlsTransport`].
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpTransport;

/// One link over a TCP connection.
pub struct TcpLink {
    stream: TcpStream,
    peer: String,
}

impl fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpLink").field("peer", &self.peer).finish()
    }
}

impl TcpLink {
    fn new(stream: TcpStream, peer: String) -> Self {
        // Best effort: a socket that refuses it still carries bytes.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        Self { stream, peer }
    }
}

impl Link for TcpLink {
    fn peer(&self) -> String {
        self.peer.clone()
    }

    fn split(self: Box<Self>) -> (LinkReader, LinkWriter) {
        let (read, write) = self.stream.into_split();
        (Box::pin(read), Box::pin(write))
    }
}

/// Accepts TCP links at one address.
pub struct TcpListener {
    endpoint: Endpoint,
    listener: tokio::net::TcpListener,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener").field("endpoint", &self.endpoint).finish()
    }
}

#[async_trait]
impl Listener for TcpListener {
    fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    async fn accept(&mut self) -> Result<Box<dyn Link>, TransportError> {
        let (stream, from) = accept(&self.listener, &self.endpoint).await?;
        Ok(Box::new(TcpLink::new(stream, describe(TCP_SCHEME, from))))
    }
}

#[async_trait]
impl Transport for TcpTransport {
    fn scheme(&self) -> &'static str {
        TCP_SCHEME
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Link>, TransportError> {
        let (host, port) = host_port(endpoint, TCP_SCHEME)?;
        let stream = connect(endpoint, host, port).await?;
        Ok(Box::new(TcpLink::new(stream, endpoint.to_string())))
    }

    async fn listen(&self, endpoint: &Endpoint) -> Result<Box<dyn Listener>, TransportError> {
        let (listener, bound) = bind(endpoint, TCP_SCHEME).await?;
        Ok(Box::new(TcpListener {
            endpoint: bound,
            listener,
        }))
    }
}

/// The host and port of a `scheme://host:port` endpoint.
fn host_port<'e>(endpoint: &'e Endpoint, scheme: &'static str) -> Result<(&'e str, u16), TransportError> {
    match endpoint.host_port() {
        Some(host_port) if endpoint.scheme() == scheme => Ok(host_port),
        _ => Err(TransportError::WrongScheme {
            transport: scheme,
            endpoint: endpoint.to_string(),
        }),
    }
}

fn io_error(endpoint: &Endpoint, source: io::Error) -> TransportError {
    TransportError::Io {
        endpoint: endpoint.to_string(),
        source,
    }
}

/// Connects to `host:port`, trying each address the name resolves to.
async fn connect(endpoint: &Endpoint, host: &str, port: u16) -> Result<TcpStream, TransportError> {
    match TcpStream::connect((host, port)).await {
        Ok(stream) => Ok(stream),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            Err(TransportError::NotListening(endpoint.to_string()))
        }
        Err(source) => Err(io_error(endpoint, source)),
    }
}

/// Binds a listener at the endpoint; returns it and the endpoint with the
/// port the system chose.
async fn bind(
    endpoint: &Endpoint,
    scheme: &'static str,
) -> Result<(tokio::net::TcpListener, Endpoint), TransportError> {
    let (host, port) = host_port(endpoint, scheme)?;
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => TransportError::InUse(endpoint.to_string()),
            _ => io_error(endpoint, source),
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| io_error(endpoint, source))?
        .port();
    let host = host.to_owned();
    let bound = match endpoint {
        Endpoint::Tls { .. } => Endpoint::Tls { host, port },
        _ => Endpoint::Tcp { host, port },
    };
    Ok((listener, bound))
}

/// The next connection. Errors that concern one connection only (it was
/// reset before it was taken) or that pass (the process is out of file
/// descriptors) are logged and waited out, so they never stop the listener.
async fn accept(
    listener: &tokio::net::TcpListener,
    endpoint: &Endpoint,
) -> Result<(TcpStream, SocketAddr), TransportError> {
    loop {
        match listener.accept().await {
            Ok(accepted) => return Ok(accepted),
            Err(error) => match AcceptError::of(&error) {
                AcceptError::OneConnection => {
                    tracing::debug!(%endpoint, %error, "a connection failed before it was accepted");
                }
                AcceptError::Exhausted => {
                    tracing::warn!(%endpoint, %error, "cannot accept now; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                AcceptError::Fatal => return Err(io_error(endpoint, error)),
            },
        }
    }
}

/// `scheme://addr` of an accepted peer.
fn describe(scheme: &str, from: SocketAddr) -> String {
    format!("{scheme}://{from}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn ipv6_loopback_links_and_reports_the_real_port() {
        let mut listener = match TcpTransport.listen(&"tcp://[::1]:0".parse().unwrap()).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("SKIPPED: no IPv6 loopback on this machine ({error})");
                return;
            }
        };
        let bound = listener.endpoint();
        assert!(bound.to_string().starts_with("tcp://[::1]:"), "{bound}");
        assert_ne!(bound.host_port().unwrap().1, 0);
        let (there, here) = tokio::join!(listener.accept(), TcpTransport.connect(&bound));
        let there = there.unwrap();
        assert!(there.peer().starts_with("tcp://[::1]:"), "{}", there.peer());
        let (_, mut write) = here.unwrap().split();
        let (mut read, _) = there.split();
        write.write_all(b"six").await.unwrap();
        let mut got = [0; 3];
        read.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"six");
    }

    #[tokio::test]
    async fn nothing_listening_and_a_taken_port_are_named() {
        let listener = TcpTransport
            .listen(&"tcp://127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let bound = listener.endpoint();
        let again = TcpTransport.listen(&bound).await.unwrap_err();
        assert!(
            matches!(&again, TransportError::InUse(e) if *e == bound.to_string()),
            "{again}"
        );
        drop(listener);
        let refused = TcpTransport.connect(&bound).await.unwrap_err();
        assert!(
            matches!(&refused, TransportError::NotListening(e) if *e == bound.to_string()),
            "{refused}"
        );
        let wrong = TcpTransport.connect(&"pipe://x".parse().unwrap()).await.unwrap_err();
        assert!(matches!(wrong, TransportError::WrongScheme { .. }));
    }
}
