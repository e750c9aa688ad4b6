//! `pipe://` on Windows: named pipes, `\\.\pipe\name`, through tokio.
//!
//! Type-checked on every CI run (`cargo check --target
//! x86_64-pc-windows-gnu`); never run: the project is built and tested on
//! Linux.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use botbus_core::{Endpoint, LinkReader, LinkWriter, PipeAddr, TransportError};
use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions};

use crate::io_error;

/// `ERROR_FILE_NOT_FOUND`: no pipe of that name.
const NOT_FOUND: i32 = 2;
/// `ERROR_ACCESS_DENIED`: with `first_pipe_instance`, the name is taken.
const ACCESS_DENIED: i32 = 5;
/// `ERROR_PIPE_BUSY`: every instance is taken; another comes shortly.
const PIPE_BUSY: i32 = 231;
/// `ERROR_NO_DATA`: a client connected and went away before it was taken.
const NO_DATA: i32 = 232;

/// One end of a connected named pipe.
pub(crate) enum Stream {
    Server(NamedPipeServer),
    Client(NamedPipeClient),
}

/// Named pipes have no directory: their namespace is `\\.\pipe\`.
pub fn runtime_dir() -> PathBuf {
    PathBuf::from(r"\\.\pipe")
}

/// The pipe a pipe address stands for: `\\.\pipe\name`. A path names a
/// Unix socket, which Windows does not have here.
pub fn socket_path(addr: &PipeAddr) -> io::Result<PathBuf> {
    match addr {
        PipeAddr::Name(name) => Ok(runtime_dir().join(name)),
        PipeAddr::Path(path) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "pipe://{} names a Unix socket; on Windows use pipe://name (the named pipe \\\\.\\pipe\\name)",
                path.display()
            ),
        )),
    }
}

pub(crate) fn split(stream: Stream) -> (LinkReader, LinkWriter) {
    match stream {
        Stream::Server(pipe) => {
            let (read, write) = tokio::io::split(pipe);
            (Box::pin(read), Box::pin(write))
        }
        Stream::Client(pipe) => {
            let (read, write) = tokio::io::split(pipe);
            (Box::pin(read), Box::pin(write))
        }
    }
}

pub(crate) async fn connect(endpoint: &Endpoint, path: &Path) -> Result<Stream, TransportError> {
    // Every instance busy: the listener makes the next one as soon as it
    // has taken a connection, so a short wait is enough.
    for _ in 0..50 {
        match ClientOptions::new().open(path) {
            Ok(client) => return Ok(Stream::Client(client)),
            Err(error) if error.raw_os_error() == Some(PIPE_BUSY) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) if error.raw_os_error() == Some(NOT_FOUND) => {
                return Err(TransportError::NotListening(format!("{endpoint} ({})", path.display())))
            }
            Err(source) => return Err(io_error(endpoint, source)),
        }
    }
    Err(io_error(
        endpoint,
        io::Error::new(io::ErrorKind::TimedOut, "every instance of the pipe stayed busy"),
    ))
}

/// The instance waiting for the next client.
pub(crate) struct Listening {
    next: NamedPipeServer,
}

fn instance(path: &Path, first: bool) -> io::Result<NamedPipeServer> {
    ServerOptions::new()
        .first_pipe_instance(first)
        .reject_remote_clients(true)
        .create(path)
}

pub(crate) async fn listen(endpoint: &Endpoint, _addr: &PipeAddr, path: &Path) -> Result<Listening, TransportError> {
    let next = instance(path, true).map_err(|source| match source.raw_os_error() {
        Some(ACCESS_DENIED) => TransportError::InUse(format!(
            "{endpoint} ({}): another process listens there",
            path.display()
        )),
        _ => io_error(endpoint, source),
    })?;
    Ok(Listening { next })
}

impl Listening {
    /// The next client, and who it is. The next instance is made before
    /// this one is handed over, so clients never find the name missing.
    pub(crate) async fn accept(
        &mut self,
        endpoint: &Endpoint,
        path: &Path,
    ) -> Result<(Stream, String), TransportError> {
        loop {
            match self.next.connect().await {
                Ok(()) => {}
                // It came and went before it was taken: wait for the next.
                Err(error) if error.raw_os_error() == Some(NO_DATA) => {
                    self.next = instance(path, false).map_err(|source| io_error(endpoint, source))?;
                    continue;
                }
                Err(source) => return Err(io_error(endpoint, source)),
            }
            let next = instance(path, false).map_err(|source| io_error(endpoint, source))?;
            let connected = std::mem::replace(&mut self.next, next);
            return Ok((Stream::Server(connected), endpoint.to_string()));
        }
    }
}
