//! `pipe://` on Unix: domain sockets, owner-only, in the runtime directory.

use std::io;
use std::path::{Path, PathBuf};

use botbus_core::transport::AcceptError;
use botbus_core::{Endpoint, LinkReader, LinkWriter, PipeAddr, TransportError};
use tokio::net::{UnixListener, UnixStream};

use crate::io_error;

pub(crate) type Stream = UnixStream;

/// Where `pipe://name` sockets live: `$XDG_RUNTIME_DIR/botbus`, else
/// `botbus-<uid>` under the temporary directory.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("botbus"),
        _ => std::env::temp_dir().join(format!("botbus-{}", user_id())),
    }
}

fn user_id() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The socket file a pipe address stands for.
pub fn socket_path(addr: &PipeAddr) -> io::Result<PathBuf> {
    match addr {
        PipeAddr::Name(name) => Ok(runtime_dir().join(format!("{name}.sock"))),
        PipeAddr::Path(path) => Ok(path.clone()),
    }
}

pub(crate) fn split(stream: Stream) -> (LinkReader, LinkWriter) {
    let (read, write) = stream.into_split();
    (Box::pin(read), Box::pin(write))
}

pub(crate) async fn connect(endpoint: &Endpoint, path: &Path) -> Result<Stream, TransportError> {
    match UnixStream::connect(path).await {
        Ok(stream) => Ok(stream),
        Err(error) if matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            Err(TransportError::NotListening(format!("{endpoint} ({})", path.display())))
        }
        Err(source) => Err(io_error(endpoint, source)),
    }
}

/// A bound socket, and the file it made (device and inode), so that drop
/// removes only that one, never a file another process put there since.
pub(crate) struct Listening {
    listener: UnixListener,
    path: PathBuf,
    made: (u64, u64),
}

pub(crate) async fn listen(endpoint: &Endpoint, addr: &PipeAddr, path: &Path) -> Result<Listening, TransportError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let PipeAddr::Name(_) = addr {
        owner_only_dir(&runtime_dir()).map_err(|source| io_error(endpoint, source))?;
    }
    clear_stale(endpoint, path).await?;
    let listener = UnixListener::bind(path).map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => TransportError::InUse(endpoint.to_string()),
        _ => io_error(endpoint, source),
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| io_error(endpoint, source))?;
    let meta = std::fs::symlink_metadata(path).map_err(|source| io_error(endpoint, source))?;
    Ok(Listening {
        listener,
        path: path.to_owned(),
        made: (meta.dev(), meta.ino()),
    })
}

impl Listening {
    /// The next connection, and who it is. Errors that concern one
    /// connection, or that pass (out of file descriptors), are waited out:
    /// they never stop the listener.
    pub(crate) async fn accept(
        &mut self,
        endpoint: &Endpoint,
        _path: &Path,
    ) -> Result<(Stream, String), TransportError> {
        let stream = loop {
            match self.listener.accept().await {
                Ok((stream, _)) => break stream,
                Err(error) => match AcceptError::of(&error) {
                    AcceptError::OneConnection => {}
                    AcceptError::Exhausted => {
                        tracing::warn!(%endpoint, %error, "cannot accept now; retrying in 100 ms");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    AcceptError::Fatal => return Err(io_error(endpoint, error)),
                },
            }
        };
        let peer = match stream.peer_cred().ok().and_then(|cred| cred.pid()) {
            Some(pid) => format!("{endpoint} (pid {pid})"),
            None => endpoint.to_string(),
        };
        Ok((stream, peer))
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.made {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Makes `dir` (and its parents) if missing, and owner-only.
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
