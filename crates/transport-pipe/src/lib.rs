//! # botbus-transport-pipe
//!
//! The `pipe` transport: processes on one machine, started separately,
//! linked through a named local endpoint — a Unix domain socket.
//!
//! Like every botbus transport crate it exports a scheme constant
//! ([`PIPE_SCHEME`]), a transport ([`PipeTransport`]) and a link
//! ([`PipeLink`]), and moves bytes only: the handshake, framing, liveness and
//! routing above it are the same code for every transport.
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
//! On Windows the same `pipe://name` is meant to be the named pipe
//! `\\.\pipe\name`; that half is not written yet (it cannot be built or run
//! on the machines this project is built on), and a Windows node refuses
//! `pipe` endpoints with a clear error.
//!
//! ```
//! use botbus_core::{Endpoint, PipeAddr};
//! use botbus_transport_pipe::{socket_path, PIPE_SCHEME};
//!
//! assert_eq!(PIPE_SCHEME, "pipe");
//! let given = socket_path(&PipeAddr::Path("/run/robot/bus.sock".into())).unwrap();
//! assert_eq!(given, std::path::Path::new("/run/robot/bus.sock"));
//! # #[cfg(unix)] {
//! let named = socket_path(&PipeAddr::Name("robot".into())).unwrap();
//! assert!(named.ends_with("robot.sock") && named.parent().unwrap().to_string_lossy().contains("botbus"));
//! # }
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
#[cfg(unix)]
use botbus_core::transport::AcceptError;
use botbus_core::{Endpoint, Link, LinkReader, LinkWriter, Listener, PipeAddr, Transport, TransportError};

/// The endpoint scheme this transport serves.
pub const PIPE_SCHEME: &str = botbus_core::PIPE_SCHEME;

/// Where `pipe://name` sockets live: `$XDG_RUNTIME_DIR/botbus`, else
/// `botbus-<uid>` under the temporary directory.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("botbus"),
        _ => std::env::temp_dir().join(format!("botbus-{}", user_id())),
    }
}

#[cfg(unix)]
fn user_id() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(not(unix))]
fn user_id() -> u32 {
    0
}

/// The socket file a pipe address stands for.
pub fn socket_path(addr: &PipeAddr) -> io::Result<PathBuf> {
    match addr {
        PipeAddr::Name(name) => Ok(runtime_dir().join(format!("{name}.sock"))),
        PipeAddr::Path(path) => Ok(path.clone()),
    }
}

fn pipe_addr(endpoint: &Endpoint) -> Result<&PipeAddr, TransportError> {
    match endpoint {
        Endpoint::Pipe(addr) => Ok(addr),
        other => Err(TransportError::WrongScheme {
            transport: PIPE_SCHEME,
            endpoint: other.to_string(),
        }),
    }
}

/// Links processes on one machine through Unix domain sockets.
#[derive(Debug, Default, Clone, Copy)]
pub struct PipeTransport;

/// One link over a Unix domain socket.
pub struct PipeLink {
    #[cfg(unix)]
    stream: tokio::net::UnixStream,
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

    #[cfg(unix)]
    fn split(self: Box<Self>) -> (LinkReader, LinkWriter) {
        let (read, write) = self.stream.into_split();
        (Box::pin(read), Box::pin(write))
    }

    #[cfg(not(unix))]
    fn split(self: Box<Self>) -> (LinkReader, LinkWriter) {
        unreachable!("no pipe link is made on this system")
    }
}

/// Accepts links at one socket; removes its file when dropped.
pub struct PipeListener {
    endpoint: Endpoint,
    path: PathBuf,
    #[cfg(unix)]
    listener: tokio::net::UnixListener,
    /// The socket file this listener made (device and inode), so that drop
    /// removes only that one, never a file another process put there since.
    #[cfg(unix)]
    made: (u64, u64),
}

impl fmt::Debug for PipeListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeListener").field("path", &self.path).finish()
    }
}

impl PipeListener {
    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
impl Drop for PipeListener {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.made {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[async_trait]
impl Listener for PipeListener {
    fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    #[cfg(unix)]
    async fn accept(&mut self) -> Result<Box<dyn Link>, TransportError> {
        // Errors that concern one connection, or that pass (out of file
        // descriptors), are waited out: they never stop the listener.
        let stream = loop {
            match self.listener.accept().await {
                Ok((stream, _)) => break stream,
                Err(error) => match AcceptError::of(&error) {
                    AcceptError::OneConnection => {}
                    AcceptError::Exhausted => {
                        tracing::warn!(endpoint = %self.endpoint, %error, "cannot accept now; retrying in 100 ms");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    AcceptError::Fatal => {
                        return Err(TransportError::Io {
                            endpoint: self.endpoint.to_string(),
                            source: error,
                        })
                    }
                },
            }
        };
        let peer = match stream.peer_cred().ok().and_then(|cred| cred.pid()) {
            Some(pid) => format!("{} (pid {pid})", self.endpoint),
            None => self.endpoint.to_string(),
        };
        Ok(Box::new(PipeLink { stream, peer }))
    }

    #[cfg(not(unix))]
    async fn accept(&mut self) -> Result<Box<dyn Link>, TransportError> {
        Err(TransportError::Closed(self.endpoint.to_string()))
    }
}

#[async_trait]
impl Transport for PipeTransport {
    fn scheme(&self) -> &'static str {
        PIPE_SCHEME
    }

    #[cfg(unix)]
    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Link>, TransportError> {
        let path = socket_path(pipe_addr(endpoint)?).map_err(|source| io_error(endpoint, source))?;
        match tokio::net::UnixStream::connect(&path).await {
            Ok(stream) => Ok(Box::new(PipeLink {
                stream,
                peer: endpoint.to_string(),
            })),
            Err(error) if matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                Err(TransportError::NotListening(format!("{endpoint} ({})", path.display())))
            }
            Err(source) => Err(io_error(endpoint, source)),
        }
    }

    #[cfg(unix)]
    async fn listen(&self, endpoint: &Endpoint) -> Result<Box<dyn Listener>, TransportError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let addr = pipe_addr(endpoint)?;
        let path = socket_path(addr).map_err(|source| io_error(endpoint, source))?;
        if let PipeAddr::Name(_) = addr {
            owner_only_dir(&runtime_dir()).map_err(|source| io_error(endpoint, source))?;
        }
        clear_stale(endpoint, &path).await?;
        let listener = tokio::net::UnixListener::bind(&path).map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => TransportError::InUse(endpoint.to_string()),
            _ => io_error(endpoint, source),
        })?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| io_error(endpoint, source))?;
        let meta = std::fs::symlink_metadata(&path).map_err(|source| io_error(endpoint, source))?;
        Ok(Box::new(PipeListener {
            endpoint: endpoint.clone(),
            path,
            listener,
            made: (meta.dev(), meta.ino()),
        }))
    }

    #[cfg(not(unix))]
    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Link>, TransportError> {
        Err(unsupported(endpoint))
    }

    #[cfg(not(unix))]
    async fn listen(&self, endpoint: &Endpoint) -> Result<Box<dyn Listener>, TransportError> {
        Err(unsupported(endpoint))
    }
}

#[cfg(not(unix))]
fn unsupported(endpoint: &Endpoint) -> TransportError {
    io_error(
        endpoint,
        io::Error::new(
            io::ErrorKind::Unsupported,
            "pipe endpoints are Unix domain sockets; named pipes on this system are not written yet",
        ),
    )
}

fn io_error(endpoint: &Endpoint, source: io::Error) -> TransportError {
    TransportError::Io {
        endpoint: endpoint.to_string(),
        source,
    }
}

/// Makes `dir` (and its parents) if missing, and owner-only.
#[cfg(unix)]
fn owner_only_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != user_id() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} belongs to another user", dir.display()),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A socket file left at `path` by a process that is gone is removed; a
/// live one is "in use"; anything that is not a socket is left alone.
#[cfg(unix)]
async fn clear_stale(endpoint: &Endpoint, path: &Path) -> Result<(), TransportError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_error(endpoint, source)),
    };
    if !meta.file_type().is_socket() {
        return Err(io_error(
            endpoint,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; not touching it", path.display()),
            ),
        ));
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(TransportError::InUse(format!(
            "{endpoint} ({}): another process listens there",
            path.display()
        ))),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path).map_err(|source| io_error(endpoint, source))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error(endpoint, source)),
    }
}
