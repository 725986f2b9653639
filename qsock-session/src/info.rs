//! What a session reports of itself (`Session::info`).
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{
    path::{PathFigures, PathState},
    SchedulerKind, Semantics,
};

/// How the session carries its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Striped over its paths.
    Striped,
    /// One plain TCP connection to a session peer, messages framed: asked
    /// for (`bypass`), or both ends single-homed with lossless semantics.
    Bypass,
    /// One plain TCP connection to a peer that does not speak the
    /// protocol: a byte stream, read in the pieces that arrive.
    Plain {
        /// Why (what the peer did).
        reason: String,
    },
}

/// One path of a striped session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathInfo {
    /// Path id (as the header carries it).
    pub id: u8,
    /// Local interface, if it is known.
    pub interface: Option<String>,
    /// Local address of its socket.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Joining, active or suspect.
    pub state: PathState,
    /// qsockd manages its socket: each message's qsock flags apply on it.
    pub attached: bool,
    /// Its measured figures.
    pub figures: PathFigures,
    /// Data datagrams sent.
    pub sent_packets: u64,
    /// Bytes sent in them, headers included.
    pub sent_bytes: u64,
    /// Of those, copies (retransmissions and duplicates).
    pub copies: u64,
    /// Bytes of the copies, headers included.
    pub copy_bytes: u64,
    /// Times it became suspect (a flapping link is suspect once, then kept
    /// out until its probes succeed for `path::READMIT_AFTER`).
    pub times_suspect: u64,
    /// Datagrams found lost.
    pub lost_packets: u64,
}

/// A session's state and counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Connection id (0 for a plain connection).
    pub conn: u32,
    /// Semantics.
    pub semantics: Semantics,
    /// Scheduler the objectives chose.
    pub scheduler: SchedulerKind,
    /// Striped, bypass or plain.
    pub mode: Mode,
    /// Every datagram is sealed ([`crate::crypto`]).
    pub encrypted: bool,
    /// Its paths (none unless striped).
    pub paths: Vec<PathInfo>,
    /// Messages the application wrote.
    pub written: u64,
    /// Messages the peer acknowledged (lossless, and non-droppable lossy, messages only).
    pub acked: u64,
    /// Droppable messages dropped at the sender (no path could deliver them by their deadline).
    pub dropped_at_sender: u64,
    /// Droppable messages of a lossy session found lost and not sent again
    /// (no deadline, or it could no longer be met).
    pub given_up: u64,
    /// Messages an ordered lossy receiver skipped.
    pub skipped: u64,
    /// Copies received of messages already handled.
    pub duplicates: u64,
    /// Datagrams refused: undecodable, another session's, from a source
    /// that did not join, or a join without the session's proof.
    pub refused_datagrams: u64,
    /// Messages released to the application.
    pub released: u64,
    /// Median time a released message spent in the reorder buffer, µs.
    pub reorder_wait_p50_us: u64,
    /// 99th percentile of it, µs.
    pub reorder_wait_p99_us: u64,
    /// Largest, µs.
    pub reorder_wait_max_us: u64,
}

impl SessionInfo {
    /// A fresh record.
    pub fn new(conn: u32, semantics: Semantics, scheduler: SchedulerKind, mode: Mode) -> Self {
        Self {
            conn,
            semantics,
            scheduler,
            mode,
            encrypted: false,
            paths: Vec::new(),
            written: 0,
            acked: 0,
            dropped_at_sender: 0,
            given_up: 0,
            skipped: 0,
            duplicates: 0,
            refused_datagrams: 0,
            released: 0,
            reorder_wait_p50_us: 0,
            reorder_wait_p99_us: 0,
            reorder_wait_max_us: 0,
        }
    }
}
