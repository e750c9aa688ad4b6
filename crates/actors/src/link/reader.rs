//! The link's reader: reads whole frames, keeps the link's liveness (a
//! ping after silence, down after more), and hands every frame to the
//! router (`Router::inbound`), its one way in.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use botbus_core::liveness::{LivenessAction, LivenessState};
use botbus_core::{Frame, FrameError, Liveness, WireCodec};
use futures::StreamExt;
use tokio_util::codec::FramedRead;

use super::LinkHandle;
use crate::router::Router;

pub(super) async fn read_loop(
    router: Arc<Router>,
    link: Arc<LinkHandle>,
    mut reader: FramedRead<botbus_core::LinkReader, WireCodec>,
    liveness: Liveness,
) {
    let mut alive = LivenessState::new(liveness, std::time::Instant::now());
    // Frames are counted, not timed: the timer looks at the count when it
    // fires, so a busy link pays one increment per frame for its liveness.
    let (mut frames, mut frames_checked) = (0u64, 0u64);
    let check = tokio::time::sleep(liveness.ping_after);
    tokio::pin!(check);
    let reason = loop {
        // The reader first: while frames are buffered, the close signal
        // (a lock inside the token) and the timer are not polled at all.
        let next = tokio::select! {
            biased;
            next = reader.next() => next,
            () = link.closed.cancelled() => break "closed by this node".to_owned(),
            () = &mut check => {
                let now = std::time::Instant::now();
                if frames != frames_checked {
                    frames_checked = frames;
                    alive.heard(now);
                }
                let next = match alive.poll(now) {
                    LivenessAction::Wait(next) => next,
                    LivenessAction::Ping { nonce, next } => {
                        link.send_control(&Frame::Ping { nonce });
                        next
                    }
                    LivenessAction::Down { silent_for } => {
                        tracing::error!(node = router.node(), peer = %link.peer, via = %link.describe, ?silent_for, "peer silent: closing the link");
                        link.broken.store(true, Ordering::Release);
                        break format!(
                            "peer silent for {silent_for:.1?}: no whole frame arrived, not even a pong (liveness: ping after {:?}, down after {:?})",
                            liveness.ping_after, liveness.down_after
                        );
                    }
                };
                check.as_mut().reset(tokio::time::Instant::from_std(next));
                continue;
            }
        };
        frames += 1;
        link.counters.frames_in.fetch_add(1, Ordering::Relaxed);
        match next {
            None => break "peer closed the link".to_owned(),
            // The connection itself failed (reset, say): the peer or the
            // network went away; nothing it sent was wrong.
            Some(Err(FrameError::Io(error))) => {
                tracing::warn!(node = router.node(), peer = %link.peer, via = %link.describe, %error, "link lost");
                break format!("link lost: {error}");
            }
            Some(Err(error)) => {
                tracing::error!(node = router.node(), peer = %link.peer, via = %link.describe, %error, "bad input: closing the link");
                link.broken.store(true, Ordering::Release);
                let reason = format!("bad input from peer: {error}");
                // The peer hears why, if it still reads.
                link.send_control(&Frame::Bye { reason: reason.clone() });
                break reason;
            }
            Some(Ok(Frame::Bye { reason })) => break format!("peer said goodbye: {reason}"),
            Some(Ok(frame)) => {
                if let Frame::Tell { .. } | Frame::Ask { .. } | Frame::Publish { .. } = frame {
                    link.counters.data_in.fetch_add(1, Ordering::Relaxed);
                }
                router.inbound(&link, frame).await
            }
        }
    };
    tracing::info!(node = router.node(), peer = %link.peer, %reason, "link down");
    router.remove_link(&link, &reason);
}
