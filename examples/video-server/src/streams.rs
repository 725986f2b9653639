//! Synthetic periodic streams for the DWCS window test: stream `i` sends one
//! datagram of fixed size per ipg, as a constant-rate video stream sends one
//! frame per period. Each datagram carries its stream, sequence number and
//! DWCS deadline, so the receiver can tell every deadline met, late or lost
//! and check each stream's worst window against its constraint x/y.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// A window test's stream set as command-line options, shared by the sender
/// (`dwcs-streams`) and the experiment (`dwcs-window`), which forwards them.
#[derive(clap::Args, Clone, Debug)]
pub struct StreamSetArgs {
    /// Window constraints x/y, one stream each, e.g. "1/2,1/4,1/8,0/1".
    #[arg(long, default_value = "1/2,1/4,1/8,0/1")]
    pub streams: String,
    /// Period of every stream (DWCS ipg), µs (> 0).
    #[arg(long, default_value_t = 4000)]
    pub ipg_us: u64,
    /// UDP payload per datagram, bytes (≥ [`HEADER_BYTES`]).
    #[arg(long, default_value_t = 1000)]
    pub bytes: usize,
    /// How long to send, s.
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
}

impl StreamSetArgs {
    /// The same options as command-line arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec!["--streams".to_string(), self.streams.clone(), "--ipg-us".into(), self.ipg_us.to_string()];
        v.extend(["--bytes".into(), self.bytes.to_string(), "--duration-s".into(), self.duration_s.to_string()]);
        v
    }

    /// Size of one datagram on the wire (IPv4, UDP, Ethernet headers added), bytes.
    pub fn wire_bytes(&self) -> u32 {
        self.bytes as u32 + WIRE_OVERHEAD_BYTES
    }
}

/// Bytes of the datagram header: stream u32, seq u64, deadline ns u64 (big endian).
pub const HEADER_BYTES: usize = 20;
/// IPv4, UDP and Ethernet headers a datagram gains on the wire, bytes.
pub const WIRE_OVERHEAD_BYTES: u32 = 14 + 20 + 8;
/// Sequence number of a stream's end marker.
pub const END_SEQ: u64 = u64::MAX;

/// A stream's window constraint x/y (`oln`/`old`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Misses allowed per window.
    pub x: u32,
    /// Window length, deadlines.
    pub y: u32,
}

/// Parses `"1/2,1/4,0/1"` into window constraints; errors on anything else
/// or on x > y, y = 0.
pub fn parse_specs(s: &str) -> Result<Vec<StreamSpec>> {
    s.split(',')
        .map(|p| {
            let (x, y) = p.trim().split_once('/').with_context(|| format!("{p:?} is not x/y"))?;
            let (x, y): (u32, u32) = (x.parse()?, y.parse()?);
            if y == 0 || x > y {
                bail!("window constraint {x}/{y} needs y > 0 and x <= y");
            }
            Ok(StreamSpec { x, y })
        })
        .collect()
}

/// Writes the header into the first [`HEADER_BYTES`] of `buf`; panics if
/// `buf` is shorter.
pub fn encode(buf: &mut [u8], stream: u32, seq: u64, deadline_ns: u64) {
    buf[..4].copy_from_slice(&stream.to_be_bytes());
    buf[4..12].copy_from_slice(&seq.to_be_bytes());
    buf[12..20].copy_from_slice(&deadline_ns.to_be_bytes());
}

/// Reads (stream, seq, deadline ns) from a datagram; `None` if too short.
pub fn decode(buf: &[u8]) -> Option<(u32, u64, u64)> {
    if buf.len() < HEADER_BYTES {
        return None;
    }
    Some((u32::from_be_bytes(buf[..4].try_into().ok()?), u64::from_be_bytes(buf[4..12].try_into().ok()?), u64::from_be_bytes(buf[12..20].try_into().ok()?)))
}

/// One datagram as the receiver saw it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Arrival {
    /// Stream index.
    pub stream: u32,
    /// Sequence number within the stream.
    pub seq: u64,
    /// Its DWCS deadline, ns of `CLOCK_MONOTONIC`.
    pub deadline_ns: u64,
    /// Kernel receive time, ns of `CLOCK_MONOTONIC`.
    pub arrival_ns: u64,
}

/// A sender that starts a send later than this after its period began has
/// woken late (the host was busy: a vCPU stall, a timer delayed), ns. The
/// window test's margin is one unit's transmission (1.12 ms); the host
/// model (`qsock-common/tests/dwcs_model.rs`) keeps every window with
/// senders up to 1 ms late.
pub const LATE_SEND_NS: u64 = 1_000_000;

/// A send that started more than [`LATE_SEND_NS`] after its period began.
/// DWCS guarantees windows for periodic arrivals; a late sender offers its
/// units bunched, and the class may then miss deadlines of any stream.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct LateSend {
    /// Sequence number of the datagram.
    pub seq: u64,
    /// When it was sent, ns of `CLOCK_MONOTONIC`.
    pub sent_ns: u64,
    /// How long after its period began, ns.
    pub behind_ns: u64,
}

/// Which deadlines (ns of `CLOCK_MONOTONIC`, per stream, in order) a late
/// send of any stream disturbed: those from the late send's period start
/// until `settle_ns` after it was sent (the class needs that long to drain
/// the bunch).
pub fn disturbed(late: &[Vec<LateSend>], deadlines: &[Vec<u64>], settle_ns: u64) -> Vec<Vec<bool>> {
    let spans: Vec<(u64, u64)> = late.iter().flatten().map(|l| (l.sent_ns - l.behind_ns, l.sent_ns + settle_ns)).collect();
    deadlines.iter().map(|d| d.iter().map(|t| spans.iter().any(|(a, b)| a <= t && t <= b)).collect()).collect()
}

/// What the receiver recorded: every datagram that reached it, and how
/// many the kernel dropped because its receive buffer was full
/// (`SO_RXQ_OVFL`), so a test can tell the receiver's losses from qsock's.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reception {
    /// Datagrams received, in order of arrival.
    pub arrivals: Vec<Arrival>,
    /// Datagrams the receiving socket's full buffer dropped, count.
    pub receive_buffer_drops: u64,
}

/// Fate of every deadline of one stream, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamOutcome {
    /// Window constraint.
    pub spec: StreamSpec,
    /// Deadlines (datagrams sent).
    pub sent: u64,
    /// Arrived by their deadline.
    pub on_time: u64,
    /// Arrived after their deadline.
    pub late: u64,
    /// Never arrived.
    pub lost: u64,
    /// Most misses in any y consecutive deadlines.
    pub worst_window: usize,
    /// Per deadline: missed (late or lost).
    pub missed: Vec<bool>,
}

/// Classifies every deadline of every stream: `sent[i]` datagrams of stream
/// `i` (seq 0..`sent[i]`) against what arrived.
pub fn outcomes(specs: &[StreamSpec], sent: &[u64], arrivals: &[Arrival]) -> Vec<StreamOutcome> {
    specs
        .iter()
        .zip(sent)
        .enumerate()
        .map(|(i, (spec, &n))| {
            let mut fate = vec![None; n as usize];
            for a in arrivals.iter().filter(|a| a.stream as usize == i && a.seq < n) {
                fate[a.seq as usize] = Some(a.arrival_ns <= a.deadline_ns);
            }
            let on_time = fate.iter().filter(|f| **f == Some(true)).count() as u64;
            let late = fate.iter().filter(|f| **f == Some(false)).count() as u64;
            let missed: Vec<bool> = fate.iter().map(|f| *f != Some(true)).collect();
            StreamOutcome {
                spec: *spec,
                sent: n,
                on_time,
                late,
                lost: n - on_time - late,
                worst_window: qsock_dwcs::worst_window(&missed, spec.y as usize),
                missed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse_nonsense() {
        assert_eq!(parse_specs("1/2, 0/1").unwrap(), vec![StreamSpec { x: 1, y: 2 }, StreamSpec { x: 0, y: 1 }]);
        assert!(parse_specs("3/2").is_err());
        assert!(parse_specs("1/0").is_err());
        assert!(parse_specs("a").is_err());
    }

    #[test]
    fn outcomes_count_late_and_lost_per_deadline() {
        let mut b = [0u8; HEADER_BYTES];
        encode(&mut b, 3, 9, 77);
        assert_eq!(decode(&b), Some((3, 9, 77)));
        let specs = [StreamSpec { x: 1, y: 3 }];
        let arr = [
            Arrival { stream: 0, seq: 0, deadline_ns: 10, arrival_ns: 5 },
            Arrival { stream: 0, seq: 1, deadline_ns: 20, arrival_ns: 25 },
            Arrival { stream: 0, seq: 3, deadline_ns: 40, arrival_ns: 40 },
        ];
        let o = &outcomes(&specs, &[4], &arr)[0];
        assert_eq!((o.on_time, o.late, o.lost), (2, 1, 1));
        assert_eq!(o.missed, vec![false, true, true, false]);
        assert_eq!(o.worst_window, 2);
    }
}
