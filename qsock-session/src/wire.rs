//! The datagrams a session's paths carry. Every field is big-endian; every
//! datagram starts with its type (1 byte), the path id (1 byte), flags
//! (2 bytes) and the session's connection id (4 bytes).
//!
//! A data datagram's header is [`DATA_HEADER_BYTES`] = 32 bytes: the
//! common 8, then the session sequence number, the path sequence number,
//! the send time (µs, wrapping), the time left to the message's deadline
//! (µs; 0: none), the hold mark (below it an ordered lossy receiver may
//! skip what is missing; at and above it a non-droppable message may still
//! be missing and come again) and the floor (the lowest message number the
//! sender may still send: an ordered lossy receiver skips a hole below it
//! at once, since the sender gave up on it). The paper asks for at least
//! the session sequence number and the path (§III-B).

/// Bytes of a data datagram's header.
pub const DATA_HEADER_BYTES: usize = 32;
/// Bytes of a join proof (truncated HMAC-SHA256).
pub const PROOF_BYTES: usize = 16;

/// Data flags (the message's qsock flags that matter at the receiver).
pub mod flag {
    /// The message may not be dropped (retransmitted while its deadline lasts).
    pub const NON_DROPPABLE: u16 = 1;
    /// First message of a frame.
    pub const FRAME_START: u16 = 2;
    /// Last message of a frame.
    pub const FRAME_END: u16 = 4;
    /// A copy sent again (retransmission or duplicate).
    pub const COPY: u16 = 8;
}

/// One datagram, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// An application message.
    Data {
        /// Connection id.
        conn: u32,
        /// Path id.
        path: u8,
        /// [`flag`] bits.
        flags: u16,
        /// Session sequence number (wire: low 32 bits; see [`extend_seq`]).
        seq: u32,
        /// Path sequence number (every datagram that is acknowledged has one).
        path_seq: u32,
        /// Sender's clock at sending, µs, wrapping.
        sent_us: u32,
        /// Time left to the deadline when sent, µs; 0: no deadline.
        budget_us: u32,
        /// The sender's oldest unacknowledged non-droppable message (low
        /// 32 bits), or the message's own number + 1 when none is older.
        hold_from: u32,
        /// The lowest message number the sender may still send (low 32
        /// bits): its oldest unacknowledged one, or this one if older.
        floor: u32,
        /// The message.
        payload: &'a [u8],
    },
    /// Acknowledges path datagrams (data and probes) of one path.
    Ack {
        /// Connection id.
        conn: u32,
        /// Path id.
        path: u8,
        /// Largest path sequence number received.
        largest: u32,
        /// Bit `i` set: `largest - 1 - i` was received too.
        below: u64,
        /// `sent_us` of the datagram `largest`.
        echo_us: u32,
        /// Time between its arrival and this ack, µs.
        delay_us: u32,
    },
    /// An empty datagram that measures a path (acknowledged like data).
    Probe {
        /// Connection id.
        conn: u32,
        /// Path id.
        path: u8,
        /// Path sequence number.
        path_seq: u32,
        /// Sender's clock, µs, wrapping.
        sent_us: u32,
    },
    /// Asks to add a path to a session, with proof of the handshake's secret.
    Join {
        /// Connection id.
        conn: u32,
        /// Path id the joiner gives it.
        path: u8,
        /// Fresh random value.
        nonce: u64,
        /// [`crate::handshake::proof`] of (conn, path, nonce).
        proof: [u8; PROOF_BYTES],
    },
    /// The path is part of the session (proof of the secret in turn).
    JoinAck {
        /// Connection id.
        conn: u32,
        /// Path id.
        path: u8,
        /// Proof over (conn, path, nonce + 1).
        proof: [u8; PROOF_BYTES],
    },
    /// The session ends after `final_seq` messages.
    Close {
        /// Connection id.
        conn: u32,
        /// Messages the sender wrote in all (low 32 bits).
        final_seq: u32,
        /// Proof over (conn, 0, final_seq).
        proof: [u8; PROOF_BYTES],
    },
    /// The peer's Close arrived (answered to each one, so the closing side
    /// knows when it may stop, as TCP acknowledges a FIN).
    CloseAck {
        /// Connection id.
        conn: u32,
        /// The `final_seq` of the Close it answers.
        final_seq: u32,
        /// Proof over (conn, 1, final_seq).
        proof: [u8; PROOF_BYTES],
    },
}

/// Why a datagram could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its type's header.
    Short,
    /// An unknown type byte.
    UnknownType(u8),
}

const DATA: u8 = 1;
const ACK: u8 = 2;
const PROBE: u8 = 3;
const JOIN: u8 = 4;
const JOIN_ACK: u8 = 5;
const CLOSE: u8 = 7;
const CLOSE_ACK: u8 = 8;

fn common(out: &mut Vec<u8>, ty: u8, path: u8, flags: u16, conn: u32) {
    out.push(ty);
    out.push(path);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&conn.to_be_bytes());
}

/// Appends `p` encoded to `out`.
pub fn encode(p: &Packet<'_>, out: &mut Vec<u8>) {
    match *p {
        Packet::Data { conn, path, flags, seq, path_seq, sent_us, budget_us, hold_from, floor, payload } => {
            common(out, DATA, path, flags, conn);
            for v in [seq, path_seq, sent_us, budget_us, hold_from, floor] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(payload);
        }
        Packet::Ack { conn, path, largest, below, echo_us, delay_us } => {
            common(out, ACK, path, 0, conn);
            out.extend_from_slice(&largest.to_be_bytes());
            out.extend_from_slice(&below.to_be_bytes());
            out.extend_from_slice(&echo_us.to_be_bytes());
            out.extend_from_slice(&delay_us.to_be_bytes());
        }
        Packet::Probe { conn, path, path_seq, sent_us } => {
            common(out, PROBE, path, 0, conn);
            out.extend_from_slice(&path_seq.to_be_bytes());
            out.extend_from_slice(&sent_us.to_be_bytes());
        }
        Packet::Join { conn, path, nonce, proof } => {
            common(out, JOIN, path, 0, conn);
            out.extend_from_slice(&nonce.to_be_bytes());
            out.extend_from_slice(&proof);
        }
        Packet::JoinAck { conn, path, proof } => {
            common(out, JOIN_ACK, path, 0, conn);
            out.extend_from_slice(&proof);
        }
        Packet::Close { conn, final_seq, proof } | Packet::CloseAck { conn, final_seq, proof } => {
            common(out, if matches!(p, Packet::Close { .. }) { CLOSE } else { CLOSE_ACK }, 0, 0, conn);
            out.extend_from_slice(&final_seq.to_be_bytes());
            out.extend_from_slice(&proof);
        }
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

fn proof_at(b: &[u8], i: usize) -> [u8; PROOF_BYTES] {
    b[i..i + PROOF_BYTES].try_into().expect("proof bytes")
}

/// Decodes one datagram. Errors: [`WireError`]; never panics, whatever
/// the bytes.
pub fn decode(b: &[u8]) -> Result<Packet<'_>, WireError> {
    if b.len() < 8 {
        return Err(WireError::Short);
    }
    let (ty, path, flags, conn) = (b[0], b[1], u16::from_be_bytes([b[2], b[3]]), u32_at(b, 4));
    let need = match ty {
        DATA => DATA_HEADER_BYTES,
        ACK => 28,
        PROBE => 16,
        JOIN => 16 + PROOF_BYTES,
        JOIN_ACK => 8 + PROOF_BYTES,
        CLOSE | CLOSE_ACK => 12 + PROOF_BYTES,
        t => return Err(WireError::UnknownType(t)),
    };
    if b.len() < need {
        return Err(WireError::Short);
    }
    Ok(match ty {
        DATA => Packet::Data {
            conn,
            path,
            flags,
            seq: u32_at(b, 8),
            path_seq: u32_at(b, 12),
            sent_us: u32_at(b, 16),
            budget_us: u32_at(b, 20),
            hold_from: u32_at(b, 24),
            floor: u32_at(b, 28),
            payload: &b[DATA_HEADER_BYTES..],
        },
        ACK => Packet::Ack { conn, path, largest: u32_at(b, 8), below: u64_at(b, 12), echo_us: u32_at(b, 20), delay_us: u32_at(b, 24) },
        PROBE => Packet::Probe { conn, path, path_seq: u32_at(b, 8), sent_us: u32_at(b, 12) },
        JOIN => Packet::Join { conn, path, nonce: u64_at(b, 8), proof: proof_at(b, 16) },
        JOIN_ACK => Packet::JoinAck { conn, path, proof: proof_at(b, 8) },
        CLOSE => Packet::Close { conn, final_seq: u32_at(b, 8), proof: proof_at(b, 12) },
        _ => Packet::CloseAck { conn, final_seq: u32_at(b, 8), proof: proof_at(b, 12) },
    })
}

/// The full sequence number whose low 32 bits are `wire`, nearest to
/// `near` (the largest seen so far): a session outlives 2³² messages.
pub fn extend_seq(near: u64, wire: u32) -> u64 {
    let base = near & !0xffff_ffff;
    let candidates = [base.wrapping_sub(1 << 32), base, base.wrapping_add(1 << 32)].map(|b| b | wire as u64);
    *candidates.iter().filter(|c| **c < (1u64 << 63)).min_by_key(|c| c.abs_diff(near)).unwrap_or(&(wire as u64))
}

/// The path sequence numbers an ack (`largest`, `below`) covers, largest first.
pub fn acked(largest: u32, below: u64) -> impl Iterator<Item = u32> {
    std::iter::once(largest).chain((0..64).filter(move |i| below >> i & 1 == 1).filter_map(move |i| largest.checked_sub(1 + i)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every datagram decodes to what was encoded.
        #[test]
        fn data_round_trips(conn: u32, path: u8, flags: u16, seq: u32, path_seq: u32, sent_us: u32, budget_us: u32, hold_from: u32, floor: u32, payload in prop::collection::vec(any::<u8>(), 0..1400)) {
            let p = Packet::Data { conn, path, flags, seq, path_seq, sent_us, budget_us, hold_from, floor, payload: &payload };
            let mut b = Vec::new();
            encode(&p, &mut b);
            prop_assert_eq!(b.len(), DATA_HEADER_BYTES + payload.len());
            prop_assert_eq!(decode(&b).unwrap(), p);
        }

        #[test]
        fn control_round_trips(conn: u32, path: u8, a: u32, below: u64, c: u32, d: u32, nonce: u64, proof: [u8; 16]) {
            for p in [
                Packet::Ack { conn, path, largest: a, below, echo_us: c, delay_us: d },
                Packet::Probe { conn, path, path_seq: a, sent_us: c },
                Packet::Join { conn, path, nonce, proof },
                Packet::JoinAck { conn, path, proof },
                Packet::Close { conn, final_seq: a, proof },
                Packet::CloseAck { conn, final_seq: a, proof },
            ] {
                let mut b = Vec::new();
                encode(&p, &mut b);
                prop_assert_eq!(decode(&b).unwrap(), p);
            }
        }

        /// Garbage is an error, never a panic.
        #[test]
        fn garbage_never_panics(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&b);
        }

        /// A sequence number within 2³¹ of the last seen one is recovered exactly.
        #[test]
        fn sequence_numbers_survive_the_wrap(near in 0u64..(1 << 40), delta in -(1i64 << 30)..(1i64 << 30)) {
            let real = (near as i64 + delta).max(0) as u64;
            prop_assert_eq!(extend_seq(near, real as u32), real);
        }
    }

    #[test]
    fn an_ack_covers_its_largest_and_the_marked_ones_below() {
        assert_eq!(acked(10, 0b101).collect::<Vec<_>>(), [10, 9, 7]);
        assert_eq!(acked(1, u64::MAX).collect::<Vec<_>>(), [1, 0]);
    }
}
