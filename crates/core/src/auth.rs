//! Authentication in the handshake: challenge–response over a shared token.
//!
//! Both sides of a link that hold a token say so in their hello
//! (`"auth":["hmac-sha256"]`) with a fresh random `nonce`. Then each proves
//! that it holds the token by sending `HMAC-SHA256(token, transcript)`, where
//! the transcript binds the prover's role and name, the verifier's name and
//! both nonces ([`proof`]). The token never crosses the wire, a proof is good
//! for one link only (both nonces are fresh), and a node's name is what it
//! proved. Proofs are compared in constant time.
//!
//! The connecting side proves first; the accepting side answers with its own
//! proof only once the connecting side's is good, so a stranger that
//! connects learns nothing it could replay elsewhere. `docs/PROTOCOL.md`
//! ("Authentication") spells out the bytes for a peer in another language.
//!
//! The token authenticates the peer, not the bytes that follow: over plain
//! TCP anyone on the path can still read or alter them. Use `tls://` where
//! that matters.
//!
//! ```
//! use botbus_core::auth::{proof, AuthToken, Role};
//!
//! let token = AuthToken::new(b"correct horse battery staple".to_vec()).unwrap();
//! let (ours, theirs) = ([1u8; 32], [2u8; 32]);
//! let p = proof(&token, Role::Connecting, "arm", "robot", &ours, &theirs);
//! assert!(token_matches(&token, &p));
//! # fn token_matches(token: &AuthToken, p: &[u8; 32]) -> bool {
//! #     botbus_core::auth::verify(token, Role::Connecting, "arm", "robot", &[1; 32], &[2; 32], p)
//! # }
//! let other = AuthToken::new(b"a different token, long enough".to_vec()).unwrap();
//! assert!(!botbus_core::auth::verify(&other, Role::Connecting, "arm", "robot", &ours, &theirs, &p));
//! assert!(AuthToken::new(b"short".to_vec()).is_err());
//! ```

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The one authentication mechanism: HMAC-SHA256 challenge–response.
pub const HMAC_SHA256: &str = "hmac-sha256";

/// Bytes in a nonce (sent as 64 lowercase hex digits).
pub const NONCE_LEN: usize = 32;

/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// Tells transcripts of this scheme apart from any other use of the token.
const CONTEXT: &[u8] = b"botbus-auth-v1";

/// A proof: an HMAC-SHA256 output.
pub type Proof = [u8; 32];

/// Which end of the link a side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that connected (it proves first).
    Connecting,
    /// The side that accepted.
    Accepting,
}

impl Role {
    /// The other end.
    pub fn peer(self) -> Role {
        match self {
            Role::Connecting => Role::Accepting,
            Role::Accepting => Role::Connecting,
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            Role::Connecting => b"connecting",
            Role::Accepting => b"accepting",
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is shorter than [`MIN_TOKEN_LEN`] bytes.
    #[error("a token must be at least {MIN_TOKEN_LEN} bytes; this one is {0}")]
    TooShort(usize),
}

/// A shared secret that nodes prove they hold. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(Arc<[u8]>);

impl AuthToken {
    /// A token of these bytes, with trailing white space (a file's final
    /// newline) removed; at least [`MIN_TOKEN_LEN`] bytes must remain.
    pub fn new(mut bytes: Vec<u8>) -> Result<Self, TokenError> {
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        if bytes.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// The proof that `prover`, at `role`, holds `token`, for the link on which
/// it sent `prover_nonce` and `verifier` sent `verifier_nonce`:
///
/// ```text
/// HMAC-SHA256(token, "botbus-auth-v1" 0x00 role 0x00 prover 0x00 verifier 0x00
///                    prover_nonce verifier_nonce)
/// ```
///
/// `role` is `connecting` or `accepting`; names are UTF-8 (a node name never
/// holds a zero byte); nonces are their 32 raw bytes.
pub fn proof(
    token: &AuthToken,
    role: Role,
    prover: &str,
    verifier: &str,
    prover_nonce: &[u8; NONCE_LEN],
    verifier_nonce: &[u8; NONCE_LEN],
) -> Proof {
    let mut mac = token.mac();
    for part in [CONTEXT, role.label(), prover.as_bytes(), verifier.as_bytes()] {
        mac.update(part);
        mac.update(&[0]);
    }
    mac.update(prover_nonce);
    mac.update(verifier_nonce);
    mac.finalize().into_bytes().into()
}

/// Whether `given` is the [`proof`] for these parameters, compared in
/// constant time.
pub fn verify(
    token: &AuthToken,
    role: Role,
    prover: &str,
    verifier: &str,
    prover_nonce: &[u8; NONCE_LEN],
    verifier_nonce: &[u8; NONCE_LEN],
    given: &[u8],
) -> bool {
    let expected = proof(token, role, prover, verifier, prover_nonce, verifier_nonce);
    expected.ct_eq(given).into()
}

/// Lowercase hex, as nonces and proofs travel.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 15)] as char);
    }
    text
}

/// Exactly `N` bytes from hex (either case), or `None`.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    bytes_from_hex(text)?.try_into().ok()
}

/// Bytes from hex (either case, two digits a byte), or `None` if `text` is
/// not that.
pub fn bytes_from_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let value = |d: u8| char::from(d).to_digit(16).and_then(|v| u8::try_from(v).ok());
    digits
        .chunks_exact(2)
        .map(|pair| Some(value(pair[0])? << 4 | value(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> AuthToken {
        AuthToken::new(b"sixteen bytes at least\n".to_vec()).unwrap()
    }

    #[test]
    fn a_proof_is_bound_to_role_names_and_nonces() {
        let t = token();
        let base = proof(&t, Role::Connecting, "a", "b", &[1; 32], &[2; 32]);
        assert_ne!(base, proof(&t, Role::Accepting, "a", "b", &[1; 32], &[2; 32]));
        assert_ne!(base, proof(&t, Role::Connecting, "b", "a", &[1; 32], &[2; 32]));
        assert_ne!(base, proof(&t, Role::Connecting, "a", "b", &[2; 32], &[1; 32]));
        assert_ne!(base, proof(&t, Role::Connecting, "ab", "", &[1; 32], &[2; 32]));
        assert!(verify(&t, Role::Connecting, "a", "b", &[1; 32], &[2; 32], &base));
        assert!(!verify(&t, Role::Connecting, "a", "b", &[1; 32], &[2; 32], &base[..31]));
    }

    #[test]
    fn the_token_is_trimmed_checked_and_never_shown() {
        assert_eq!(token(), AuthToken::new(b"sixteen bytes at least".to_vec()).unwrap());
        assert_eq!(
            AuthToken::new(b"fifteen bytes!!\n".to_vec()),
            Err(TokenError::TooShort(15))
        );
        assert_eq!(format!("{:?}", token()), "AuthToken(<redacted>)");
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let bytes = [0x00, 0x7f, 0xa5, 0xff];
        assert_eq!(to_hex(&bytes), "007fa5ff");
        assert_eq!(from_hex::<4>("007FA5ff"), Some(bytes));
        assert_eq!(from_hex::<4>("007fa5f"), None);
        assert_eq!(from_hex::<4>("007fa5fg"), None);
        assert_eq!(bytes_from_hex("00ff"), Some(vec![0, 255]));
        assert_eq!(bytes_from_hex(""), Some(vec![]));
        assert_eq!(bytes_from_hex("0"), None);
        assert_eq!(bytes_from_hex("+1"), None);
        assert_eq!(from_hex::<2>("+1+1"), None);
    }
}
