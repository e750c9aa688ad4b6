//! A frame of every kind, shared by the protocol tests and the fuzz crate's
//! seeds (`fuzz/`), so both cover every kind the protocol knows.

#![allow(dead_code, unreachable_pub)]

use botbus_core::{AskError, DownReason, Frame, Reach, WirePayload};
use bytes::Bytes;

/// Every frame kind, with `body` as each payload's body (`json`: it is
/// JSON text).
pub fn frames_with_body(body: Bytes, json: bool) -> Vec<Frame> {
    let payload = WirePayload {
        name: "t.Msg".into(),
        body,
        json,
    };
    vec![
        Frame::Tell {
            to: "m".into(),
            from: "n/a".into(),
            payload: payload.clone(),
        },
        Frame::Ask {
            id: 1,
            to: "m".into(),
            from: "n/a".into(),
            timeout_ms: 50,
            payload: payload.clone(),
        },
        Frame::Reply {
            id: 1,
            result: Ok(payload.clone()),
        },
        Frame::Reply {
            id: 2,
            result: Err(AskError::Stopped("m".into())),
        },
        Frame::Progress {
            id: 1,
            payload: payload.clone(),
        },
        Frame::CallerAsk {
            id: 1,
            call: 0,
            payload: payload.clone(),
        },
        Frame::CallerReply {
            id: 1,
            call: 0,
            result: Err(AskError::CallerNotListening("m".into())),
        },
        Frame::Cancel { id: 1 },
        Frame::Publish {
            topic: "a/b".into(),
            from: "n/a".into(),
            payload,
            to: vec!["b".into(), "c".into()],
        },
        Frame::Subscribe { pattern: "a/*".into() },
        Frame::Unsubscribe { pattern: "a/*".into() },
        Frame::Announce {
            modules: vec!["m".into()],
            subscriptions: vec!["**".into()],
            reach: vec![Reach {
                node: "c".into(),
                path: vec!["b".into(), "c".into()],
                modules: vec!["n".into()],
                subscriptions: vec!["a/**".into()],
                json: false,
            }],
        },
        Frame::AnnouncePart {
            modules: vec!["m2".into()],
            subscriptions: Vec::new(),
            reach: vec![Reach {
                node: "c".into(),
                path: vec!["b".into(), "c".into()],
                modules: vec!["n2".into()],
                subscriptions: Vec::new(),
                json: true,
            }],
        },
        Frame::Down {
            module: "m".into(),
            reason: DownReason::Failed("boom".into()),
        },
        Frame::Ping { nonce: 3 },
        Frame::Pong { nonce: 3 },
        Frame::Credit { frames: 256 },
        Frame::Bye { reason: "done".into() },
    ]
}
