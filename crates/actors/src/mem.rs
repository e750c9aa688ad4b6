//! The in-memory transport, `mem://name`: two nodes in one process, linked
//! through an in-memory byte pipe. Everything above the bytes — handshake,
//! codec, routing — is the same code every real transport runs, which is what
//! makes it the router's proving ground.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use botbus_core::{async_trait, Endpoint, Link, LinkReader, LinkWriter, Listener, Transport, TransportError};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// The scheme this transport serves.
pub const MEM_SCHEME: &str = botbus_core::MEM_SCHEME;

/// Bytes in flight each way before the writer waits.
const PIPE_BYTES: usize = 256 * 1024;

type Registry = Mutex<HashMap<String, mpsc::UnboundedSender<DuplexStream>>>;

fn listeners() -> &'static Registry {
    static LISTENERS: OnceLock<Registry> = OnceLock::new();
    LISTENERS.get_or_init(Registry::default)
}

/// Links nodes inside one process.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemTransport;

/// One in-memory link.
pub struct MemLink {
    stream: DuplexStream,
    peer: String,
}

impl fmt::Debug for MemLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemLink").field("peer", &self.peer).finish()
    }
}

impl Link for MemLink {
    fn peer(&self) -> String {
        self.peer.clone()
    }

    fn split(self: Box<Self>) -> (LinkReader, LinkWriter) {
        let (read, write) = tokio::io::split(self.stream);
        (Box::pin(read), Box::pin(write))
    }
}

/// Accepts in-memory links at `mem://name`; the name is free again once it
/// is dropped.
pub struct MemListener {
    name: String,
    incoming: mpsc::UnboundedReceiver<DuplexStream>,
}

impl fmt::Debug for MemListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemListener").field("name", &self.name).finish()
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        listeners().lock().expect("mem registry").remove(&self.name);
    }
}

#[async_trait]
impl Listener for MemListener {
    fn endpoint(&self) -> Endpoint {
        Endpoint::Mem(self.name.clone())
    }

    async fn accept(&mut self) -> Result<Box<dyn Link>, TransportError> {
        match self.incoming.recv().await {
            Some(stream) => Ok(Box::new(MemLink {
                stream,
                peer: format!("mem://{} (accepted)", self.name),
            })),
            None => Err(TransportError::Closed(format!("mem://{}", self.name))),
        }
    }
}

fn name_of(endpoint: &Endpoint) -> Result<&str, TransportError> {
    match endpoint {
        Endpoint::Mem(name) => Ok(name),
        other => Err(TransportError::WrongScheme {
            transport: MEM_SCHEME,
            endpoint: other.to_string(),
        }),
    }
}

#[async_trait]
impl Transport for MemTransport {
    fn scheme(&self) -> &'static str {
        MEM_SCHEME
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Box<dyn Link>, TransportError> {
        let name = name_of(endpoint)?;
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        let registry = listeners().lock().expect("mem registry");
        let listener = registry
            .get(name)
            .ok_or_else(|| TransportError::NotListening(endpoint.to_string()))?;
        listener
            .send(theirs)
            .map_err(|_| TransportError::NotListening(endpoint.to_string()))?;
        Ok(Box::new(MemLink {
            stream: ours,
            peer: endpoint.to_string(),
        }))
    }

    async fn listen(&self, endpoint: &Endpoint) -> Result<Box<dyn Listener>, TransportError> {
        let name = name_of(endpoint)?;
        let mut registry = listeners().lock().expect("mem registry");
        if registry.contains_key(name) {
            return Err(TransportError::InUse(endpoint.to_string()));
        }
        let (tx, incoming) = mpsc::unbounded_channel();
        registry.insert(name.to_owned(), tx);
        Ok(Box::new(MemListener {
            name: name.to_owned(),
            incoming,
        }))
    }
}
