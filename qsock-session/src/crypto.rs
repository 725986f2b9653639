//! Encryption of a session on request ([`crate::SessionConfig::encrypt`]),
//! with well-kept crates (RustCrypto, dalek): an X25519 exchange in the
//! handshake (RFC 7748), HKDF-SHA256 (RFC 5869) over its shared secret
//! salted with the answer's secret, one ChaCha20-Poly1305 key per direction
//! (RFC 8439) and a fresh join secret. Every path datagram is then sealed:
//! its common 8-byte header (type, path, flags, connection id) stays in
//! clear as associated data, followed by a 64-bit send counter (the nonce)
//! and the sealed rest with its 16-byte tag ([`OVERHEAD`] = 24 bytes). A
//! receiver refuses a datagram that does not open, or whose counter it saw
//! already (a replay window of 64 below the highest).
//!
//! The exchange is not authenticated (as tcpcrypt, RFC 8548): it keeps
//! observers out and every datagram authentic, but an active attacker on
//! the control connection at the handshake could sit in the middle.
use chacha20poly1305::{aead::AeadInPlace, ChaCha20Poly1305, KeyInit, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::{handshake::Secret, ErrorKind, Result, SessionError};

/// Bytes a sealed datagram adds: the counter (8) and the tag (16).
pub const OVERHEAD: usize = 8 + 16;
/// Bytes of the clear header every datagram starts with.
const CLEAR: usize = 8;

/// One side's X25519 key for the exchange.
pub struct Exchange {
    secret: x25519_dalek::StaticSecret,
    /// Its public half, sent to the peer (hex in the handshake).
    pub public: [u8; 32],
}

impl Exchange {
    /// A fresh key from the OS's generator. Errors: [`ErrorKind::Io`] when
    /// the generator fails.
    pub fn new() -> Result<Self> {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).map_err(|e| SessionError::new(ErrorKind::Io, format!("random bytes: {e}")))?;
        let secret = x25519_dalek::StaticSecret::from(b);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Self { secret, public })
    }

    /// The session's keys from the peer's public key (hex) and the answer's
    /// secret; `connector`: this side opened the session. Errors:
    /// [`ErrorKind::Protocol`] for a malformed or degenerate public key.
    pub fn keys(&self, peer_public_hex: &str, salt: &Secret, connector: bool) -> Result<(Sealer, Secret)> {
        let peer: [u8; 32] = hex::decode(peer_public_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| SessionError::new(ErrorKind::Protocol, "a malformed X25519 key in the handshake"))?;
        let shared = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(SessionError::new(ErrorKind::Protocol, "a degenerate X25519 key in the handshake"));
        }
        let hk = Hkdf::<Sha256>::new(Some(salt), shared.as_bytes());
        let mut okm = [0u8; 96];
        hk.expand(b"qsock-session v1 keys", &mut okm).expect("96 bytes is a valid HKDF length");
        let (c2s, rest) = okm.split_at(32);
        let (s2c, join) = rest.split_at(32);
        let (send, recv) = if connector { (c2s, s2c) } else { (s2c, c2s) };
        let sealer = Sealer {
            send: ChaCha20Poly1305::new_from_slice(send).expect("32-byte key"),
            recv: ChaCha20Poly1305::new_from_slice(recv).expect("32-byte key"),
            counter: 0,
            highest: None,
            seen: 0,
        };
        Ok((sealer, join.try_into().expect("32 bytes")))
    }
}

/// The sealing state of one session: both directions' keys, the send
/// counter and the receive replay window.
pub struct Sealer {
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
    counter: u64,
    highest: Option<u64>,
    /// Bit `i`: counter `highest - 1 - i` was opened.
    seen: u64,
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

impl Sealer {
    /// Seals an encoded datagram in place (see the module docs).
    pub fn seal(&mut self, datagram: &mut Vec<u8>) {
        let counter = self.counter;
        self.counter += 1;
        let mut body = datagram.split_off(CLEAR.min(datagram.len()));
        self.send.encrypt_in_place(&nonce(counter), datagram, &mut body).expect("a datagram is far below ChaCha20's limit");
        datagram.extend_from_slice(&counter.to_be_bytes());
        datagram.extend_from_slice(&body);
    }

    /// Opens a sealed datagram into `out` (clear header + plain rest).
    /// Errors: `None` for a datagram too short, forged, damaged or replayed.
    pub fn open(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Option<()> {
        if datagram.len() < CLEAR + OVERHEAD {
            return None;
        }
        let counter = u64::from_be_bytes(datagram[CLEAR..CLEAR + 8].try_into().ok()?);
        if self.was_seen(counter) {
            return None;
        }
        out.clear();
        out.extend_from_slice(&datagram[CLEAR + 8..]);
        let header = &datagram[..CLEAR];
        self.recv.decrypt_in_place(&nonce(counter), header, out).ok()?;
        out.splice(0..0, header.iter().copied());
        self.mark_seen(counter);
        Some(())
    }

    fn was_seen(&self, c: u64) -> bool {
        match self.highest {
            None => false,
            Some(h) if c > h => false,
            Some(h) if c == h => true,
            Some(h) => h - c > 64 || self.seen >> (h - c - 1) & 1 == 1,
        }
    }

    fn mark_seen(&mut self, c: u64) {
        match self.highest {
            Some(h) if c < h => self.seen |= 1 << (h - c - 1),
            Some(h) => {
                let shift = c - h;
                self.seen = if shift >= 64 { 0 } else { (self.seen << shift) | (1 << (shift - 1)) };
                self.highest = Some(c);
            }
            None => self.highest = Some(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Sealer) {
        let (a, b) = (Exchange::new().unwrap(), Exchange::new().unwrap());
        let salt = [7u8; 32];
        let (sa, ja) = a.keys(&hex::encode(b.public), &salt, true).unwrap();
        let (sb, jb) = b.keys(&hex::encode(a.public), &salt, false).unwrap();
        assert_eq!(ja, jb, "both ends derive the same join secret");
        (sa, sb)
    }

    #[test]
    fn a_sealed_datagram_opens_once_at_the_peer_and_only_there() {
        let (mut a, mut b) = pair();
        let plain = b"\x01\x00\x00\x00\xde\xad\xbe\xefthe message".to_vec();
        let mut d = plain.clone();
        a.seal(&mut d);
        assert_eq!(d.len(), plain.len() + OVERHEAD);
        assert!(!d.windows(7).any(|w| w == b"message"), "the payload is not in clear");
        let mut out = Vec::new();
        assert!(b.open(&d, &mut out).is_some());
        assert_eq!(out, plain);
        assert!(b.open(&d, &mut out).is_none(), "a replay is refused");
        let mut forged = d.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(b.open(&forged, &mut out).is_none(), "a damaged datagram is refused");
        let mut own = plain.clone();
        b.seal(&mut own);
        assert!(b.open(&own, &mut out).is_none(), "each direction has its own key");
    }

    #[test]
    fn datagrams_open_in_any_order_within_the_window() {
        let (mut a, mut b) = pair();
        let sealed: Vec<Vec<u8>> = (0..100u8)
            .map(|i| {
                let mut d = vec![3, 0, 0, 0, 1, 2, 3, 4, i];
                a.seal(&mut d);
                d
            })
            .collect();
        let mut out = Vec::new();
        for i in (0..100).rev().filter(|i| i % 3 != 1) {
            assert_eq!(b.open(&sealed[i], &mut out).is_some(), 99 - i <= 64, "datagram {i}");
        }
    }
}
