//! # botbus-transport-pipe
//!
//! The `pipe` transport: processes on one machine, started separately,
//! linked through a named local endpoint — a Unix domain socket, or on
//! Windows a named pipe.
//!
//! Like every botbus transport crate it exports a scheme constant
//! ([`PIPE_SCHEME`]), a transport ([`PipeTransport`]) and a link
//! ([`PipeLink`]), and moves bytes only: the handshake, framing, liveness and
//! routing above it are the same code for every transport.
//!
//! **On Unix:**
//!
//! * `pipe://name` is the socket `name.sock` in the user's runtime
//!   directory: `$XDG_RUNTIME_DIR/botbus/`, or else `botbus-<uid>/` under the
//!   temporary directory. That directory is made owner-only (0700).
//! * `pipe:///abs/path.sock` is a socket at exactly that path.
//! * **The socket file** is owner-only (0600). A file left by a process that
//!   crashed (a socket nobody accepts on) is found stale and replaced; a live
//!   one is never taken over: listening there is an "already in use" error
//!   naming the endpoint. A file that is not a socket is never removed. The
//!   listener removes its file when it is dropped, if the file is still the
//!   one it made.
//!
//! **On Windows** `pipe://name` is the named pipe `\\.\pipe\name` (tokio's
//! named pipes; `pipe:///path` is refused: it names a Unix socket). A second
//! listener on a live name is "already in use" (the first instance is
//! created with `FILE_FLAG_FIRST_PIPE_INSTANCE`); there is no file to go
//! stale or to remove. Remote clients are rejected, and the pipe's default
//! security lets only its owner, administrators and the system open it for
//! writing, which linking needs. This half is type-checked on every CI run
//! (`cargo check --target x86_64-pc-windows-gnu`) but has never run: the
//! project is built and tested on Linux.
//!
//! ```
//! use botbus_core::{Endpoint, PipeAddr};
//! use botbus_transport_pipe::{socket_path, PIPE_SCHEME};
//!
//! assert_eq!(PIPE_SCHEME, "pipe");
//! # #[cfg(unix)] {
//! let given = socket_path(&PipeAddr::Path("/run/robot/bus.sock".into())).unwrap();
//! assert_eq!(given, std::path::Path::new("/run/robot/bus.sock"));
//! let named = socket_path(&PipeAddr::Name("robot".into())).unwrap();
//! assert!(named.ends_with("robot.sock") && named.parent().unwrap().to_string_lossy().contains("botbus"));
//! # }
//! ```

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as sys;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as sys;

#[cfg(not(any(unix, windows)))]
compile_error!("the pipe transport is written for Unix (domain sockets) and Windows (named pipes)");

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use botbus_core::{Endpoint, Link, LinkReader, LinkWriter, Listener, PipeAddr, Transport, TransportError};

pub use sys::{runtime_dir, socket_path};

/// The endpoint scheme this transport serves.
pub const PIPE_SCHEME: &str = botbus_core::PIPE_SCHEME;

fn pipe_addr(endpoint: &Endpoint) -> Result<&PipeAddr, TransportError> {
    match endpoint {
        Endpoint::Pipe(addr) => Ok(addr),
        other => Err(TransportError::WrongScheme {
            transport: PIPE_SCHEME,
            endpoint: other.to_string(),
        }),
    }
}

fn io_error(endpoint: &Endpoint, source: io::Error) -> TransportError {
    TransportError::Io {
        endpoint: endpoint.to_string(),
        source,
    }
}

/// Links processes on one machine through Unix domain sockets (named pipes
/// on Windows).
#[derive(Debug, Default, Clone, Copy)]
pub struct PipeTransport;

/// One link over a Unix domain socket (a named pipe on Windows).
pub struct PipeLink {
    stream: sys::Stream,
    peer: String,
}

impl fmt::Debug for PipeLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeLink").field("peer", &self.peer).finish()
    }
}

impl Link for PipeLink {
    fn peer(&self) -> String {
        self.peer.clone()
    }

    fn split(self: Box<Self>) -> (LinkReader, LinkWriter) {
        sys::split(self.stream)
    }
}

/// Accepts links at one endpoint. On Unix it removes its socket file when
/// dropped.
pub struct PipeListener {
    endpoint: Endpoint,
    path: PathBuf,
    inner: sys::Listening,
}

impl fmt::Debug for PipeListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeListener").field("path", &self.path).finish()
    }
}

impl PipeListener {
    /// The socket file (on Windows, the pipe's name, `\\.\pipe\name`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Listener for PipeListener {
    fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    async fn accept(&mut self) -> Result<Box<dyn Link>, TransportError> {
        let (stream, peer) = self.inner.accept(&self.endpoint, &self.path).await?;
        Ok(Box::new(PipeLink { stream, peer }))
    }
}

#[async_trait]
impl Transport for PipeTransport {
    fn scheme(&self) -> &'static str {
        PIPE_SCHEME
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Link>, TransportError> {
        let path = socket_path(pipe_addr(endpoint)?).map_err(|source| io_error(endpoint, source))?;
        let stream = sys::connect(endpoint, &path).await?;
        Ok(Box::new(PipeLink {
            stream,
            peer: endpoint.to_string(),
        }))
    }

    async fn listen(&self, endpoint: &Endpoint) -> Result<Box<dyn Listener>, TransportError> {
        let addr = pipe_addr(endpoint)?;
        let path = socket_path(addr).map_err(|source| io_error(endpoint, source))?;
        let inner = sys::listen(endpoint, addr, &path).await?;
        Ok(Box::new(PipeListener {
            endpoint: endpoint.clone(),
            path,
            inner,
        }))
    }
}
