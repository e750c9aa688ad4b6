//! The handshake's driver: moves bytes between the fresh link and the core
//! [`Handshake`] state machine until the link is agreed on, within the
//! handshake deadline. The state machine decides; this only does the I/O.

use std::time::Duration;

use botbus_core::handshake::{Agreed, Handshake};
use botbus_core::{HandshakeError, Hello, LinkReader, LinkWriter};
use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, FramedRead};

/// The state machine as a decoder, so that the reader that carries the
/// handshake carries on with the frame codec, with whatever arrived after
/// the handshake still in its buffer.
pub(super) struct Driving(Handshake);

/// What the input did to the handshake.
pub(super) enum Step {
    /// It has something to send.
    Send,
    /// The link is agreed on.
    Agreed(Agreed),
}

impl Decoder for Driving {
    type Item = Step;
    type Error = HandshakeError;

    fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Step>, HandshakeError> {
        match self.0.handle_input(input)? {
            Some(agreed) => Ok(Some(Step::Agreed(agreed))),
            None if self.0.has_transmit() => Ok(Some(Step::Send)),
            None => Ok(None),
        }
    }
}

/// Runs the handshake introducing this side with `ours`; returns what was
/// agreed and the reader, whose buffer holds what followed the handshake.
pub(super) async fn run(
    read: LinkReader,
    write: &mut LinkWriter,
    ours: Hello,
    timeout: Duration,
) -> Result<(Agreed, FramedRead<LinkReader, Driving>), HandshakeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut reader = FramedRead::new(read, Driving(Handshake::new(ours)));
    loop {
        while let Some(bytes) = reader.decoder_mut().0.poll_transmit() {
            write.write_all(&bytes).await?;
            write.flush().await?;
        }
        match tokio::time::timeout_at(deadline, reader.next()).await {
            Err(_) => return Err(HandshakeError::Timeout(timeout)),
            Ok(None) => return Err(HandshakeError::Closed),
            Ok(Some(Err(error))) => return Err(error),
            Ok(Some(Ok(Step::Send))) => {}
            Ok(Some(Ok(Step::Agreed(agreed)))) => return Ok((agreed, reader)),
        }
    }
}
