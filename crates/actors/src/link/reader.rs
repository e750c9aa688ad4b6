//! The link's reader: reads whole frames, keeps the link's liveness (a
//! ping after silence, down after more), and hands every frame on.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use botbus_core::liveness::{LivenessAction, LivenessState};
use botbus_core::{AskEnvelope, AskError, Envelope, EnvelopeKind, Frame, Liveness, TopicPattern, WireCodec};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::asks::{InboundAsk, LinkCaller};
use super::flow::{park_or_deliver, take_data, Owed};
use super::{LinkHandle, RemoteReach, RemoteState};
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
            Some(Err(error)) => {
                tracing::error!(node = router.node(), peer = %link.peer, via = %link.describe, %error, "bad input: closing the link");
                link.broken.store(true, Ordering::Release);
                break format!("bad input from peer: {error}");
            }
            Some(Ok(Frame::Bye { reason })) => break format!("peer said goodbye: {reason}"),
            Some(Ok(frame)) => dispatch(&router, &link, frame).await,
        }
    };
    tracing::info!(node = router.node(), peer = %link.peer, %reason, "link down");
    router.remove_link(&link, &reason);
}

pub(super) async fn dispatch(router: &Arc<Router>, link: &Arc<LinkHandle>, frame: Frame) {
    if let Frame::Tell { .. } | Frame::Ask { .. } | Frame::Publish { .. } = frame {
        link.counters.data_in.fetch_add(1, Ordering::Relaxed);
    }
    match frame {
        Frame::Tell { to, from, payload } => {
            let envelope = Envelope {
                from: from.into(),
                payload: link.unwire(payload),
                kind: EnvelopeKind::Tell,
            };
            take_data(router, link, to, envelope, None).await;
        }
        Frame::Ask {
            id,
            to,
            from,
            timeout_ms,
            payload,
        } => {
            if !router.routable(&to) {
                link.send_control(&Frame::Reply {
                    id,
                    result: Err(AskError::UnknownModule(to)),
                });
                return;
            }
            let cancel = CancellationToken::new();
            link.inbound.lock().expect("link lock").insert(
                id,
                InboundAsk {
                    cancel: cancel.clone(),
                    forwarded: None,
                },
            );
            let caller = LinkCaller {
                link: link.clone(),
                id,
                callee: to.clone(),
                next_call: AtomicU32::new(0),
                replied: false,
            };
            let envelope = Envelope {
                from: from.into(),
                payload: link.unwire(payload),
                kind: EnvelopeKind::Ask(AskEnvelope {
                    caller: Box::new(caller),
                    cancel,
                    deadline: Instant::now() + Duration::from_millis(timeout_ms),
                }),
            };
            take_data(router, link, to, envelope, Some(id)).await;
        }
        Frame::Reply { id, result } => {
            let pending = link.pending.lock().expect("link lock").remove(&id);
            if let Some(pending) = pending {
                pending.caller.reply(result.map(|p| link.unwire(p)));
            }
        }
        Frame::Progress { id, payload } => {
            if let Some(pending) = link.pending.lock().expect("link lock").get(&id) {
                pending.caller.progress(link.unwire(payload));
            }
        }
        Frame::CallerAsk { id, call, payload } => {
            let answer = link
                .pending
                .lock()
                .expect("link lock")
                .get(&id)
                .map(|p| p.caller.caller_ask(link.unwire(payload)));
            let link = link.clone();
            match answer {
                None => link.send_control(&Frame::CallerReply {
                    id,
                    call,
                    result: Err(AskError::Cancelled(link.peer.clone())),
                }),
                Some(answer) => {
                    tokio::spawn(async move {
                        let result = answer
                            .await
                            .and_then(|p| link.wire(&p).map_err(|e| AskError::BadPayload(e.to_string())));
                        link.send_control(&Frame::CallerReply { id, call, result });
                    });
                }
            }
        }
        Frame::CallerReply { id, call, result } => {
            let answer = link.caller_calls.lock().expect("link lock").remove(&(id, call));
            if let Some(answer) = answer {
                let _ = answer.send(result.map(|p| link.unwire(p)));
            }
        }
        Frame::Cancel { id } => {
            let ask = link.inbound.lock().expect("link lock").remove(&id);
            if let Some(ask) = ask {
                ask.cancel.cancel();
                if let Some(hook) = ask.forwarded {
                    hook();
                }
            }
        }
        Frame::Publish {
            topic,
            from,
            payload,
            to,
        } => {
            let (here, onward) = router.inbound_publish(link, &topic, &to);
            let (from, topic, payload) = (Arc::<str>::from(from), Arc::<str>::from(topic), link.unwire(payload));
            if here {
                for module in router.local_subscriber_names(&topic) {
                    let envelope = Envelope {
                        from: from.clone(),
                        payload: payload.clone(),
                        kind: EnvelopeKind::Publish { topic: topic.clone() },
                    };
                    let owed = Owed {
                        credit: false,
                        ask: None,
                    };
                    park_or_deliver(router, link, module.to_string(), envelope, owed).await;
                }
            }
            if !onward.is_empty() {
                router.forward_publish(&topic, &from, &payload, onward).await;
            }
            link.credit(1);
        }
        Frame::Subscribe { pattern } => match TopicPattern::parse(&pattern) {
            Ok(pattern) => {
                let mut remote = link.remote.write().expect("link lock");
                if !remote.subscriptions.contains(&pattern) {
                    remote.subscriptions.push(pattern);
                }
                drop(remote);
                router.refresh();
            }
            Err(error) => tracing::warn!(peer = %link.peer, %error, "ignoring a bad subscription"),
        },
        Frame::Unsubscribe { pattern } => {
            link.remote
                .write()
                .expect("link lock")
                .subscriptions
                .retain(|p| p.as_str() != pattern);
            router.refresh();
        }
        Frame::Announce {
            modules,
            subscriptions,
            reach,
        } => {
            let patterns = |patterns: Vec<String>| -> Vec<TopicPattern> {
                patterns
                    .iter()
                    .filter_map(|p| match TopicPattern::parse(p) {
                        Ok(p) => Some(p),
                        Err(error) => {
                            tracing::warn!(peer = %link.peer, %error, "ignoring a bad subscription");
                            None
                        }
                    })
                    .collect()
            };
            let reach = reach
                .into_iter()
                .map(|r| RemoteReach {
                    node: r.node,
                    path: r.path,
                    modules: r.modules,
                    subscriptions: patterns(r.subscriptions),
                })
                .collect();
            *link.remote.write().expect("link lock") = RemoteState {
                announced: true,
                modules,
                subscriptions: patterns(subscriptions),
                reach,
            };
            router.refresh();
        }
        Frame::Down { module, reason } => router.remote_down(link, &module, reason),
        Frame::Ping { nonce } => link.send_control(&Frame::Pong { nonce }),
        Frame::Pong { .. } => {}
        Frame::Credit { frames } => {
            if link.peer_credits {
                link.permits.add_permits(frames as usize);
            }
        }
        Frame::Bye { .. } => unreachable!("handled by the read loop"),
    }
}
