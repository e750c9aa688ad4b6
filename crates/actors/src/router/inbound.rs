//! The one way in: every frame a link reads comes to [`Router::inbound`] —
//! or, for a tell or an ask read borrowed from a postcard frame's bytes, to
//! [`Router::inbound_data`] (or, for tells to one module one after another,
//! [`Router::inbound_tells`]), which take it with no allocation of their
//! own. (A reply read borrowed goes straight to its link's bookkeeping,
//! [`LinkHandle::take_reply`], where this would send it.)
//!
//! Frames about where things are and where messages go — tells, asks,
//! publishes, announcements, subscriptions, downs — are the router's to
//! handle. Frames that only make sense on their own link — replies,
//! progress and caller messages of asks by the link's ids, cancels, credit,
//! pings — go back to that link's own bookkeeping.

use std::collections::VecDeque;
use std::sync::Arc;

use botbus_core::announce::Announcement;
use botbus_core::{AskError, DataIn, Envelope, EnvelopeKind, Frame, SenderAddress};
use bytes::Bytes;

use super::Router;
use crate::link::{LinkHandle, Waiting};

impl Router {
    /// Tells for `to` arrived on `link` one after another, read borrowed
    /// from the frames: taken in order, together where they can be (see
    /// [`LinkHandle::take_tells_now`]). Takes them all without waiting
    /// unless the peer sent past its window: then the one to wait for comes
    /// back, and the rest stay in `tells`.
    pub(crate) fn inbound_tells<'to>(
        self: &Arc<Self>,
        link: &Arc<LinkHandle>,
        to: &'to str,
        tells: &mut VecDeque<Envelope>,
    ) -> Option<Waiting<'to>> {
        link.take_tells_now(self, to, tells)
    }

    /// A tell or an ask arrived on `link`, read borrowed from `run`, the
    /// frames read with it; `from` is its sender and `callee` whom it is
    /// for, as the link's reader interned them (the reader takes tells
    /// apart, in runs, and hands on only asks here; a tell is taken all
    /// the same).
    /// Takes it without waiting unless the peer sent past its window: then
    /// the frame comes back, to be waited for.
    pub(crate) fn inbound_data<'to>(
        self: &Arc<Self>,
        link: &Arc<LinkHandle>,
        data: DataIn<'to>,
        from: Arc<str>,
        callee: Arc<str>,
        run: &Bytes,
    ) -> Option<Waiting<'to>> {
        match data {
            DataIn::Tell { to, payload, .. } => {
                let envelope = Envelope {
                    from: from.into(),
                    payload: link.unwire_in(payload, run),
                    kind: EnvelopeKind::Tell,
                };
                link.take_data_now(self, to, envelope, None)
            }
            DataIn::Ask {
                id,
                to,
                timeout_ms,
                payload,
                ..
            } => {
                if self.unknown_at_its_node(to) {
                    link.refuse_ask(id, AskError::UnknownModule(to.to_owned()));
                    link.credit_one();
                    return None;
                }
                let Some(envelope) = link.accept_ask(id, callee, from.into(), timeout_ms, link.unwire_in(payload, run))
                else {
                    link.credit_one();
                    return None;
                };
                link.take_data_now(self, to, envelope, Some(id))
            }
        }
    }

    /// `frame`, a part of what `link`'s peer announces or the announce
    /// that ends it (any other frame is not taken here): once whole, the
    /// routes are made afresh.
    fn take_announce(&self, link: &LinkHandle, frame: Frame) {
        let Some((part, more)) = Announcement::from_frame(frame) else {
            return;
        };
        if link.gather_announce(part, more) {
            self.refresh();
        }
    }

    /// Whether `to`, the callee of an ask that arrived over a link, names a
    /// module at another node that does not have it: refused at once, not
    /// passed on there. Any other callee is routed as it is, with one look
    /// at the table; if the route fails, the ask ends with why (an unknown
    /// module, say) all the same.
    fn unknown_at_its_node(&self, to: &str) -> bool {
        match botbus_core::address::split(to) {
            (Some(node), _) if node != self.node => !self.routable(to),
            _ => false,
        }
    }

    /// A frame arrived on `link`.
    pub(crate) async fn inbound(self: &Arc<Self>, link: &Arc<LinkHandle>, frame: Frame) {
        match frame {
            Frame::Tell { to, from, payload } => {
                let envelope = Envelope {
                    from: from.into(),
                    payload: link.unwire(payload),
                    kind: EnvelopeKind::Tell,
                };
                link.take_data(self, &to, envelope, None).await;
            }
            Frame::Ask {
                id,
                to,
                from,
                timeout_ms,
                payload,
            } => {
                if self.unknown_at_its_node(&to) {
                    link.refuse_ask(id, AskError::UnknownModule(to));
                    link.credit_one();
                    return;
                }
                let callee = Arc::<str>::from(&*to);
                let Some(envelope) = link.accept_ask(id, callee, from.into(), timeout_ms, link.unwire(payload)) else {
                    link.credit_one();
                    return;
                };
                link.take_data(self, &to, envelope, Some(id)).await;
            }
            Frame::Publish {
                topic,
                from,
                payload,
                to,
            } => {
                let (here, onward) = self.inbound_publish(link, &topic, &to);
                let (from, topic, payload) = (SenderAddress::from(from), Arc::<str>::from(topic), link.unwire(payload));
                if here {
                    for module in self.local_subscriber_names(&topic) {
                        let envelope = Envelope {
                            from: from.clone(),
                            payload: payload.clone(),
                            kind: EnvelopeKind::Publish { topic: topic.clone() },
                        };
                        link.deliver_published(self, module.to_string(), envelope).await;
                    }
                }
                if !onward.is_empty() {
                    self.forward_publish(&topic, &from, &payload, onward).await;
                }
                link.credit_one();
            }
            announce @ (Frame::Announce { .. } | Frame::AnnouncePart { .. }) => self.take_announce(link, announce),
            Frame::Subscribe { pattern } => {
                link.set_subscribed(&pattern, true);
                self.refresh();
            }
            Frame::Unsubscribe { pattern } => {
                link.set_subscribed(&pattern, false);
                self.refresh();
            }
            Frame::Down { module, reason } => self.remote_down(link, &module, reason),
            Frame::Ping { nonce } => link.send_control(&Frame::Pong { nonce }),
            Frame::Pong { .. } => {}
            Frame::Credit { frames } => link.on_credit(frames),
            frame @ (Frame::Reply { .. }
            | Frame::Progress { .. }
            | Frame::CallerAsk { .. }
            | Frame::CallerReply { .. }
            | Frame::Cancel { .. }) => link.on_ask_frame(frame),
            Frame::Bye { .. } => {} // the reader closes the link on it
        }
    }
}
