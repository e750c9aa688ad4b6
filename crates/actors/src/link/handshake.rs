//! The handshake's driver: moves bytes between the fresh link and the core
//! [`Handshake`] state machine until the link is agreed on, within the
//! handshake deadline. The state machine decides; this only does the I/O.

use std::time::Duration;

use botbus_core::handshake::{Agreed, Handshake};
use botbus_core::{HandshakeError, LinkReader, LinkWriter};
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

/// Runs `handshake`, to be done by `deadline` (`timeout` after the link's
/// start); returns what was agreed and the reader, whose buffer holds what
/// followed the handshake.
pub(super) async fn run(
    read: LinkReader,
    write: &mut LinkWriter,
    handshake: Handshake,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(Agreed, FramedRead<LinkReader, Driving>), HandshakeError> {
    let mut reader = FramedRead::new(read, Driving(handshake));
    let outcome = tokio::time::timeout_at(deadline, async {
        loop {
            send_queued(&mut reader, write).await?;
            match reader.next().await {
                None => return Err(HandshakeError::Closed),
                Some(Err(error)) => return Err(error),
                Some(Ok(Step::Send)) => {}
                Some(Ok(Step::Agreed(agreed))) => {
                    // The accepting side's proof goes out with the agreement.
                    send_queued(&mut reader, write).await?;
                    return Ok(agreed);
                }
            }
        }
    })
    .await;
    match outcome {
        Err(_) => Err(HandshakeError::Timeout(timeout)),
        Ok(Ok(agreed)) => Ok((agreed, reader)),
        Ok(Err(error)) => {
            // What the state machine left to send says why (a refusal);
            // the peer may be gone or not reading, so this is best effort.
            let _ = tokio::time::timeout(Duration::from_millis(100), send_queued(&mut reader, write)).await;
            Err(error)
        }
    }
}

async fn send_queued(
    reader: &mut FramedRead<LinkReader, Driving>,
    write: &mut LinkWriter,
) -> Result<(), HandshakeError> {
    let mut sent = false;
    while let Some(bytes) = reader.decoder_mut().0.poll_transmit() {
        write.write_all(&bytes).await?;
        sent = true;
    }
    if sent {
        write.flush().await?;
    }
    Ok(())
}
