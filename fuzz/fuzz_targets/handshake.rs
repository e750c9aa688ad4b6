//! The handshake state machine, with and without authentication, on either
//! end of a link: any bytes, in any pieces, end in an agreement or an
//! error — never a panic, never a hang — and an authenticating side never
//! agrees with a peer that did not prove the token.
#![no_main]

use botbus_core::auth::{AuthToken, Role};
use botbus_core::handshake::Handshake;
use botbus_core::Hello;
use botbus_fuzz::{HANDSHAKE_NONCE, HANDSHAKE_TOKEN};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (splits, stream) = rest.split_at(rest.len().min(4));
    let role = if mode & 1 == 0 {
        Role::Accepting
    } else {
        Role::Connecting
    };
    let authenticating = mode & 2 == 0;
    let ours = Hello::new("fuzz");
    let mut handshake = match authenticating {
        true => Handshake::authenticated(
            ours,
            role,
            AuthToken::new(HANDSHAKE_TOKEN.to_vec()).unwrap(),
            HANDSHAKE_NONCE,
        ),
        false => Handshake::new(ours),
    };
    while handshake.poll_transmit().is_some() {}
    let mut buffer = BytesMut::new();
    let mut sizes = splits.iter().cycle();
    let mut left = stream;
    while !left.is_empty() {
        let size = sizes
            .next()
            .map_or(left.len(), |&s| usize::from(s).max(1))
            .min(left.len());
        buffer.extend_from_slice(&left[..size]);
        left = &left[size..];
        match handshake.handle_input(&mut buffer) {
            Ok(Some(agreed)) => {
                assert_eq!(agreed.authenticated, authenticating);
                assert_ne!(agreed.peer.node, "fuzz");
                return;
            }
            Ok(None) => while handshake.poll_transmit().is_some() {},
            Err(_) => {
                // Over: it takes nothing more.
                assert!(handshake.handle_input(&mut BytesMut::from(&b"{}\n"[..])).is_err());
                return;
            }
        }
    }
});
