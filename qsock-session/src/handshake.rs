//! Session establishment (§III-B, "connection establishment"): over a
//! reliable control connection (TCP) the connecting side sends a
//! [`Hello`] (its addresses, semantics, objectives, transports); the
//! accepting side answers [`Answer::Welcome`] with its path endpoints and
//! a fresh 32-byte secret, or [`Answer::Refused`]. Every path then joins
//! with a proof of that secret (HMAC-SHA256, truncated to 16 bytes), so a
//! host that did not see the handshake can neither add a path nor take one
//! over. Frames on the control connection: [`PREFIX`], a 4-byte big-endian
//! length, JSON.
//!
//! The secret travels in the clear on the control connection: it keeps
//! off-path hosts out, not one that reads the control connection.
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;

use crate::{wire::PROOF_BYTES, ErrorKind, Objective, Result, Semantics, SessionError};

/// First bytes of every control frame: a peer whose first bytes differ
/// does not speak the protocol.
pub const PREFIX: &[u8; 4] = b"QSS1";
/// Largest control frame, bytes.
pub const MAX_FRAME: usize = 64 * 1024;

/// The shared secret of a session.
pub type Secret = [u8; 32];

/// What the connecting side offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Its semantics.
    pub semantics: Semantics,
    /// Its objectives.
    pub objectives: Vec<Objective>,
    /// Its interfaces' addresses the paths come from.
    pub addresses: Vec<IpAddr>,
    /// Transports it can use for paths (`"udp"`).
    pub transports: Vec<String>,
    /// Largest message it will write, bytes.
    pub max_message_bytes: usize,
    /// Its X25519 public key (hex) when it asks for encryption ([`crate::crypto`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The accepting side's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// The session exists.
    Welcome {
        /// Connection id every datagram carries.
        conn: u32,
        /// Where paths join: one UDP endpoint per address of the accepting host.
        endpoints: Vec<SocketAddr>,
        /// The secret, hex (the joins' proofs; with encryption, the salt of the keys).
        secret: String,
        /// Transport the paths use.
        transport: String,
        /// Its X25519 public key (hex) when the hello asked for encryption.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// No session, and why.
    Refused {
        /// For a person.
        reason: String,
    },
}

/// A fresh secret from the operating system's generator.
/// Errors: [`ErrorKind::Io`] when the generator fails.
pub fn new_secret() -> Result<Secret> {
    let mut s = [0u8; 32];
    getrandom::getrandom(&mut s).map_err(|e| SessionError::io("getrandom", e))?;
    Ok(s)
}

/// A random 64-bit value (nonces, connection ids) from the operating
/// system's generator. Errors: as [`new_secret`].
pub fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| SessionError::io("getrandom", e))?;
    Ok(u64::from_be_bytes(b))
}

fn mac(secret: &Secret, conn: u32, path: u8, value: u64) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key size");
    m.update(b"qsock-session join");
    m.update(&conn.to_be_bytes());
    m.update(&[path]);
    m.update(&value.to_be_bytes());
    m
}

/// The proof over (`conn`, `path`, `value`): the first 16 bytes of
/// HMAC-SHA256 keyed with the secret.
pub fn proof(secret: &Secret, conn: u32, path: u8, value: u64) -> [u8; PROOF_BYTES] {
    let tag = mac(secret, conn, path, value).finalize().into_bytes();
    tag[..PROOF_BYTES].try_into().expect("16 of 32 bytes")
}

/// Whether `given` is the proof over (`conn`, `path`, `value`), compared in constant time.
pub fn verify(secret: &Secret, conn: u32, path: u8, value: u64, given: &[u8; PROOF_BYTES]) -> bool {
    mac(secret, conn, path, value).verify_truncated_left(given).is_ok()
}

/// The secret as the answer carries it: 64 hex digits.
pub fn secret_to_hex(s: &Secret) -> String {
    hex::encode(s)
}

/// The secret of 64 hex digits. Errors: [`ErrorKind::Protocol`].
pub fn secret_from_hex(s: &str) -> Result<Secret> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| SessionError::new(ErrorKind::Protocol, format!("the peer's secret is not 64 hex digits: {e}")))?;
    Ok(out)
}

/// Writes `v` as one control frame. Errors: [`ErrorKind::Io`].
pub fn write_frame(s: &mut impl Write, v: &impl Serialize) -> Result<()> {
    let body = serde_json::to_vec(v).map_err(|e| SessionError::io("encode a control frame", e))?;
    let mut f = PREFIX.to_vec();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    s.write_all(&f).map_err(|e| SessionError::io("write to the control connection", e))
}

/// Reads one control frame. Errors: [`ErrorKind::Protocol`] (not our
/// prefix, too long, not the expected JSON), [`ErrorKind::Io`] (including
/// the stream's read timeout).
pub fn read_frame<T: DeserializeOwned>(s: &mut impl Read) -> Result<T> {
    let mut head = [0u8; 8];
    read_fully(s, &mut head)?;
    if &head[..4] != PREFIX {
        return Err(SessionError::new(ErrorKind::Protocol, "the peer does not speak qsock-session (no QSS1 prefix)"));
    }
    let n = u32::from_be_bytes(head[4..].try_into().expect("4 bytes")) as usize;
    if n > MAX_FRAME {
        return Err(SessionError::new(ErrorKind::Protocol, format!("a control frame of {n} bytes (at most {MAX_FRAME})")));
    }
    let mut body = vec![0u8; n];
    read_fully(s, &mut body)?;
    serde_json::from_slice(&body).map_err(|e| SessionError::new(ErrorKind::Protocol, format!("a malformed control frame: {e}")))
}

fn read_fully(s: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    s.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => SessionError::new(ErrorKind::TimedOut, "the peer did not answer in time"),
        std::io::ErrorKind::UnexpectedEof => SessionError::new(ErrorKind::Protocol, "the peer closed the control connection"),
        _ => SessionError::io("read the control connection", e),
    })
}

/// Smoothed RTT of a connected TCP socket (`tcpi_rtt`), or `None`.
pub fn tcp_rtt(s: &TcpStream) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let r = unsafe { libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len) };
    (r == 0 && info.tcpi_rtt > 0).then(|| Duration::from_micros(info.tcpi_rtt as u64))
}

/// How long the connecting side waits for the answer before it takes the
/// peer for one that does not speak the protocol: the answer takes one
/// round trip, measured by the TCP handshake; twice that, plus
/// [`ANSWER_SLACK`] so one lost segment of the hello or the answer, sent
/// again at Linux's minimum RTO (200 ms), does not pass for a plain peer.
pub fn answer_wait(rtt: Option<Duration>) -> Duration {
    2 * rtt.unwrap_or(Duration::from_millis(100)) + ANSWER_SLACK
}

/// See [`answer_wait`]: one retransmission at the minimum RTO and 50 ms for
/// a busy peer. Before it was 50 ms alone, a session over a link with 1 %
/// loss fell back to plain TCP when its answer was lost (found by CI).
pub const ANSWER_SLACK: Duration = Duration::from_millis(250);

/// Whether the first bytes on an accepted connection are our prefix,
/// waiting at most `wait` for them; nothing is consumed. A peer that
/// sends something else, or nothing, is a plain client.
pub fn peer_speaks_protocol(s: &TcpStream, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    let mut head = [0u8; 4];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.peek(&mut head) {
            Ok(0) => return false,
            Ok(n) if head[..n] != PREFIX[..n] => return false,
            Ok(4) => return true,
            // Part of the prefix: more is coming.
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_only_for_its_secret_and_fields() {
        let s = [7u8; 32];
        let p = proof(&s, 1, 2, 3);
        assert!(verify(&s, 1, 2, 3, &p));
        assert!(!verify(&s, 1, 2, 4, &p));
        assert!(!verify(&s, 1, 3, 3, &p));
        assert!(!verify(&[8u8; 32], 1, 2, 3, &p));
        assert_eq!(secret_from_hex(&secret_to_hex(&s)).unwrap(), s);
        assert!(secret_from_hex("zz").is_err());
    }

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let h = Hello {
            semantics: Semantics::OrderedLossy,
            objectives: vec![Objective::Latency],
            addresses: vec![],
            transports: vec!["udp".into()],
            max_message_bytes: 1000,
            key: None,
        };
        let mut b = Vec::new();
        write_frame(&mut b, &h).unwrap();
        assert_eq!(read_frame::<Hello>(&mut &b[..]).unwrap(), h);
        assert_eq!(read_frame::<Hello>(&mut &b"GET / HTTP/1.1\r\n"[..]).unwrap_err().kind, ErrorKind::Protocol);
        let mut bad = PREFIX.to_vec();
        bad.extend_from_slice(&5u32.to_be_bytes());
        bad.extend_from_slice(b"{nope");
        assert_eq!(read_frame::<Hello>(&mut &bad[..]).unwrap_err().kind, ErrorKind::Protocol);
    }
}
