//! The thread that runs one striped session: it sends the application's
//! messages over the paths the scheduler picks, acknowledges what
//! arrives, finds losses (three later datagrams acknowledged, or one later
//! and 9/8 RTT passed, RFC 9002; a probe after a probe timeout uncovers a
//! tail loss; or the path silent for a few RTTs) and sends lost messages
//! again on any path (lossless ones always; of a lossy session, the
//! non-droppable ones and those whose deadline can still be met), probes
//! idle and suspect paths, and releases what arrived through the reorder
//! buffer.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::{SocketAddr, UdpSocket},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use qsock::PacketFlags;

use crate::{
    handshake::{self, Secret},
    info::{PathInfo, SessionInfo},
    path::{lia_coupling, PathEstimator, PathState},
    reorder::Reorder,
    sched::{self, Decision, MessageView, PathView},
    wire::{self, flag, Packet},
    ErrorKind, SessionError,
};

/// Received messages the application has not read, bytes, beyond which
/// data is dropped unacknowledged (the sender sends it again later).
pub(crate) const RECV_LIMIT: usize = 16 << 20;
/// Written messages not yet acknowledged (or sent, when lossy), bytes,
/// beyond which `write` blocks.
pub(crate) const SEND_LIMIT: usize = 4 << 20;
/// A path with nothing to send is probed this often, to keep its
/// figures fresh and find it dead before it is needed.
const IDLE_PROBE: Duration = Duration::from_millis(200);
/// A join is sent again this often until the peer answers…
const JOIN_RETRY: Duration = Duration::from_millis(200);
/// …for at most this long.
const JOIN_GIVE_UP: Duration = Duration::from_secs(3);
/// After the application closed, how long the engine keeps sending what
/// is unacknowledged and repeating its Close.
pub(crate) const LINGER: Duration = Duration::from_secs(5);
/// A session whose every path has been suspect this long is broken.
const ALL_DEAD: Duration = Duration::from_secs(10);
/// Datagrams a path may have sent after a lost one before it counts as lost (RFC 9002's packet threshold).
const PACKET_THRESHOLD: u32 = 3;
/// Added to a path's srtt + 4 rttvar before it is probed with data in flight:
/// the receiver's processing and scheduling delay (RFC 9002's max_ack_delay).
const PTO_SLACK: Duration = Duration::from_millis(5);

/// A message the application wrote.
pub(crate) struct Out {
    pub seq: u64,
    pub payload: Vec<u8>,
    pub flags: PacketFlags,
}

/// What the application and the engine share.
pub(crate) struct Shared {
    pub send: VecDeque<Out>,
    pub send_bytes: usize,
    /// Bytes written and still owed (queued or unacknowledged).
    pub owed_bytes: usize,
    pub recv: VecDeque<Vec<u8>>,
    pub recv_bytes: usize,
    pub next_seq: u64,
    pub closing: bool,
    /// The peer closed and everything it sent was released: reads end.
    pub peer_done: bool,
    /// The peer acknowledged our Close: a closing application may go.
    pub close_acked: bool,
    /// The engine stopped (with an error when the session broke).
    pub stopped: Option<Option<SessionError>>,
    pub info: SessionInfo,
}

/// The application's handle on the engine.
pub(crate) struct Handle {
    pub shared: Mutex<Shared>,
    pub readable: Condvar,
    pub writable: Condvar,
    pub wake: OwnedFd,
}

impl Handle {
    /// Wakes the engine (an eventfd write).
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to an eventfd; failure only means it is already signalled.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

struct Sent {
    seq: Option<u64>,
    bytes: u64,
    at: Instant,
    delivered: u64,
    delivered_at: Instant,
    /// It left with room in its path's window (the path was not what limited it).
    app_limited: bool,
}

/// One path as the engine runs it.
pub(crate) struct Path {
    pub id: u8,
    pub sock: usize,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub interface: Option<String>,
    /// qsockd attached its socket: messages go with their qsock flags.
    pub attached: bool,
    pub est: PathEstimator,
    next_path_seq: u32,
    sent: BTreeMap<u32, Sent>,
    delivered: u64,
    delivered_at: Instant,
    rx_largest: Option<u32>,
    rx_below: u64,
    rx_largest_at: Instant,
    rx_largest_sent_us: u32,
    last_sent: Instant,
    pub join_nonce: u64,
    join_started: Instant,
    last_join: Option<Instant>,
    became_suspect: Option<Instant>,
    /// Path sequence numbers in flight when it became suspect: an ack of one shows the suspicion was spurious.
    suspect_in_flight: Option<(u32, u32)>,
    /// Send time of the latest datagram this path had acknowledged.
    acked_sent_at: Option<Instant>,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub copies: u64,
    pub copy_bytes: u64,
    pub times_suspect: u64,
    pub lost_packets: u64,
}

impl Path {
    /// A path from socket `sock` to `remote`, joining (the connecting
    /// side) or joined already (the accepting side, after a valid join).
    pub fn new(id: u8, sock: usize, local: SocketAddr, remote: SocketAddr, interface: Option<String>, est: PathEstimator, joined: bool) -> Self {
        let now = Instant::now();
        let mut est = est;
        if joined {
            est.state = PathState::Active;
        }
        Self {
            id,
            sock,
            local,
            remote,
            interface,
            attached: false,
            est,
            next_path_seq: 0,
            sent: BTreeMap::new(),
            delivered: 0,
            delivered_at: now,
            rx_largest: None,
            rx_below: 0,
            rx_largest_at: now,
            rx_largest_sent_us: 0,
            last_sent: now,
            join_nonce: 0,
            join_started: now,
            last_join: None,
            became_suspect: None,
            suspect_in_flight: None,
            acked_sent_at: None,
            sent_packets: 0,
            sent_bytes: 0,
            copies: 0,
            copy_bytes: 0,
            times_suspect: 0,
            lost_packets: 0,
        }
    }

    fn usable(&self) -> bool {
        self.est.state == PathState::Active
    }

    fn info(&self) -> PathInfo {
        PathInfo {
            id: self.id,
            interface: self.interface.clone(),
            local: self.local,
            remote: self.remote,
            state: self.est.state,
            attached: self.attached,
            figures: self.est.figures.clone(),
            sent_packets: self.sent_packets,
            sent_bytes: self.sent_bytes,
            copies: self.copies,
            copy_bytes: self.copy_bytes,
            times_suspect: self.times_suspect,
            lost_packets: self.lost_packets,
        }
    }
}

/// Which end of the session this engine is.
pub(crate) enum Role {
    /// Connected: joins its paths.
    Connector,
    /// Accepted: paths join it (each source proven by the secret).
    Acceptor,
}

/// Everything the engine runs on.
pub(crate) struct Engine {
    pub handle: Arc<Handle>,
    pub conn: u32,
    pub secret: Secret,
    /// Seals and opens every datagram when the session is encrypted.
    pub sealer: Option<crate::crypto::Sealer>,
    pub role: Role,
    pub sockets: Vec<Arc<UdpSocket>>,
    pub paths: Vec<Path>,
    pub semantics: crate::Semantics,
    pub scheduler: Box<dyn sched::Scheduler>,
    pub fair: bool,
    pub reorder: Reorder,
    /// Lossless (and non-droppable lossy) messages sent and not yet acknowledged.
    unacked: BTreeMap<u64, Out>,
    /// Of those, the ones to send again.
    resend: BTreeSet<u64>,
    /// Of those, the non-droppable ones (the hold mark is the first).
    non_droppable: BTreeSet<u64>,
    /// Messages taken from the application's queue, not yet sent.
    pending: VecDeque<Out>,
    /// Their bytes.
    pending_bytes: usize,
    /// Bytes still in the application's queue at the last look.
    app_queued: usize,
    /// A frame in progress stays on its paths.
    frame_paths: Option<Vec<usize>>,
    peer_final: Option<u64>,
    close_sent: Option<Instant>,
    closing_since: Option<Instant>,
    all_dead_since: Option<Instant>,
    dropped_at_sender: u64,
    given_up: u64,
    acked_messages: u64,
    /// Last time an acknowledgement freed a message (the close linger counts from it).
    last_progress: Instant,
    refused_datagrams: u64,
    started: Instant,
    /// Time released messages spent in the reorder buffer, µs.
    waits: hdrhistogram::Histogram<u64>,
    /// Bytes of `pending` and `unacked`: what the application is still owed.
    owed: usize,
    /// The control connection: kept open while the session lives.
    pub _control: Option<std::net::TcpStream>,
    last_info: Instant,
}

impl Engine {
    /// An engine over `paths` (the connector's are joining).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        handle: Arc<Handle>,
        conn: u32,
        (secret, sealer): (Secret, Option<crate::crypto::Sealer>),
        role: Role,
        sockets: Vec<Arc<UdpSocket>>,
        paths: Vec<Path>,
        config: &crate::SessionConfig,
        control: Option<std::net::TcpStream>,
    ) -> Self {
        let kind = config.scheduler.unwrap_or_else(|| crate::scheduler_for(config.semantics, &config.objectives));
        Self {
            handle,
            conn,
            secret,
            sealer,
            role,
            sockets,
            paths,
            semantics: config.semantics,
            scheduler: sched::new(kind),
            fair: config.fair,
            reorder: Reorder::new(config.semantics, config.reorder_bound),
            unacked: BTreeMap::new(),
            resend: BTreeSet::new(),
            non_droppable: BTreeSet::new(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            app_queued: 0,
            frame_paths: None,
            peer_final: None,
            close_sent: None,
            closing_since: None,
            all_dead_since: None,
            dropped_at_sender: 0,
            given_up: 0,
            acked_messages: 0,
            last_progress: Instant::now(),
            refused_datagrams: 0,
            started: Instant::now(),
            waits: hdrhistogram::Histogram::new(3).expect("3 significant digits"),
            owed: 0,
            _control: control,
            last_info: Instant::now(),
        }
    }

    fn now_us(&self) -> u32 {
        self.started.elapsed().as_micros() as u32
    }

    /// Runs until the session ends; the result goes to the handle.
    pub fn run(mut self) {
        let end = self.run_loop();
        self.publish_info();
        for p in self.paths.iter().filter(|p| p.est.figures.min_rtt_us > 0) {
            crate::scoreboard::record(&p.local.ip(), &p.remote.ip(), p.est.figures.srtt_us, p.est.figures.delivery_bps);
        }
        let mut sh = self.handle.shared.lock().expect("session state poisoned");
        sh.peer_done = true;
        sh.stopped = Some(end.err());
        drop(sh);
        self.handle.readable.notify_all();
        self.handle.writable.notify_all();
    }

    fn run_loop(&mut self) -> Result<(), SessionError> {
        for s in &self.sockets {
            s.set_nonblocking(true).map_err(|e| SessionError::io("set a path socket non-blocking", e))?;
        }
        let mut buf = vec![0u8; 65536];
        loop {
            self.wait_for_work();
            let now = Instant::now();
            for k in 0..self.sockets.len() {
                loop {
                    let (n, from) = match self.sockets[k].recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        // ICMP errors of a connected socket (port unreachable): the path's silence says it.
                        Err(_) => break,
                    };
                    let datagram = buf[..n].to_vec();
                    self.on_datagram(k, from, &datagram, now);
                }
            }
            self.timers(now);
            self.take_written();
            self.send_what_fits(now);
            self.deliver(now);
            if now.duration_since(self.last_info) >= Duration::from_millis(50) {
                self.publish_info();
            }
            if let Some(r) = self.finished(now) {
                return r;
            }
        }
    }

    /// Blocks until a datagram, a write of the application, or the next timer.
    fn wait_for_work(&self) {
        let mut fds: Vec<libc::pollfd> = self.sockets.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        fds.push(libc::pollfd { fd: self.handle.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        let mut timeout = Duration::from_millis(5);
        if let Some(w) = self.reorder.next_wake() {
            timeout = timeout.min(w.saturating_duration_since(Instant::now()));
        }
        // SAFETY: fds is a valid array of its length for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis().max(1) as i32) };
        if fds.last().is_some_and(|f| f.revents & libc::POLLIN != 0) {
            let mut v = [0u8; 8];
            // SAFETY: an 8-byte read from an eventfd that is readable.
            unsafe { libc::read(self.handle.wake.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
        }
    }

    fn path_of(&self, sock: usize, from: SocketAddr) -> Option<usize> {
        self.paths.iter().position(|p| p.sock == sock && p.remote == from)
    }

    fn on_datagram(&mut self, sock: usize, from: SocketAddr, b: &[u8], now: Instant) {
        let mut opened = Vec::new();
        let b = match &mut self.sealer {
            Some(s) => {
                if s.open(b, &mut opened).is_none() {
                    self.refused_datagrams += 1;
                    return;
                }
                &opened[..]
            }
            None => b,
        };
        let Ok(p) = wire::decode(b) else {
            self.refused_datagrams += 1;
            return;
        };
        let conn = match p {
            Packet::Data { conn, .. }
            | Packet::Ack { conn, .. }
            | Packet::Probe { conn, .. }
            | Packet::Join { conn, .. }
            | Packet::JoinAck { conn, .. }
            | Packet::Close { conn, .. }
            | Packet::CloseAck { conn, .. } => conn,
        };
        if conn != self.conn {
            self.refused_datagrams += 1;
            return;
        }
        if let Packet::Join { path, nonce, proof, .. } = p {
            return self.on_join(sock, from, path, nonce, &proof);
        }
        // Everything else only from a joined path's own source.
        let Some(i) = self.path_of(sock, from) else {
            self.refused_datagrams += 1;
            return;
        };
        match p {
            Packet::Data { seq, path_seq, sent_us, budget_us, hold_from, floor, payload, .. } => {
                self.on_data(i, (seq, hold_from, floor), path_seq, sent_us, budget_us, payload, now)
            }
            Packet::Probe { path_seq, sent_us, .. } => {
                self.note_received(i, path_seq, sent_us, now);
                self.send_ack(i, now);
            }
            Packet::Ack { largest, below, echo_us, delay_us, .. } => self.on_ack(i, largest, below, echo_us, delay_us, now),
            Packet::JoinAck { proof, .. } => {
                let p = &mut self.paths[i];
                if p.est.state == PathState::Joining && handshake::verify(&self.secret, self.conn, p.id, p.join_nonce.wrapping_add(1), &proof) {
                    p.est.state = PathState::Active;
                    p.est.last_ack = Some(now);
                    if let Some(t) = p.last_join {
                        p.est.on_rtt(now.duration_since(t).as_micros() as u64);
                    }
                    log::debug!("session {:08x}: path {} ({:?}) joined", self.conn, p.id, p.interface);
                } else if p.est.state == PathState::Joining {
                    self.refused_datagrams += 1;
                }
            }
            Packet::CloseAck { final_seq, proof, .. } => {
                if handshake::verify(&self.secret, self.conn, 1, final_seq as u64, &proof) {
                    self.handle.shared.lock().expect("session state poisoned").close_acked = true;
                    self.handle.writable.notify_all();
                } else {
                    self.refused_datagrams += 1;
                }
            }
            Packet::Close { final_seq, proof, .. } => {
                if handshake::verify(&self.secret, self.conn, 0, final_seq as u64, &proof) {
                    let ack = Packet::CloseAck { conn: self.conn, final_seq, proof: handshake::proof(&self.secret, self.conn, 1, final_seq as u64) };
                    let mut out = Vec::new();
                    wire::encode(&ack, &mut out);
                    if let Some(s) = &mut self.sealer {
                        s.seal(&mut out);
                    }
                    let _ = self.sockets[sock].send_to(&out, from);
                    let total = wire::extend_seq(self.reorder.next_seq(), final_seq);
                    if self.peer_final.is_none() {
                        self.reorder.finish(total, now);
                    }
                    self.peer_final = Some(total);
                } else {
                    self.refused_datagrams += 1;
                }
            }
            Packet::Join { .. } => unreachable!("handled above"),
        }
    }

    fn on_join(&mut self, sock: usize, from: SocketAddr, path: u8, nonce: u64, proof: &[u8; wire::PROOF_BYTES]) {
        if !matches!(self.role, Role::Acceptor) || !handshake::verify(&self.secret, self.conn, path, nonce, proof) {
            // Without the secret nobody adds a path or moves one.
            self.refused_datagrams += 1;
            log::info!("session {:08x}: a join from {from} without the session's proof: refused", self.conn);
            return;
        }
        let local = self.sockets[sock].local_addr().unwrap_or(from);
        match self.paths.iter().position(|p| p.id == path) {
            Some(i) => {
                // A join again (its answer was lost), or the same path from a new source (NAT rebinding): proven either way.
                self.paths[i].remote = from;
                self.paths[i].sock = sock;
            }
            None => {
                let interface = qsock::subflows::interface_holding(local.ip());
                self.paths.push(Path::new(path, sock, local, from, interface, PathEstimator::new(0, 0), true));
            }
        }
        let answer = Packet::JoinAck { conn: self.conn, path, proof: handshake::proof(&self.secret, self.conn, path, nonce.wrapping_add(1)) };
        let mut out = Vec::new();
        wire::encode(&answer, &mut out);
        if let Some(s) = &mut self.sealer {
            s.seal(&mut out);
        }
        let _ = self.sockets[sock].send_to(&out, from);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_data(&mut self, i: usize, (seq, hold_from, floor): (u32, u32, u32), path_seq: u32, sent_us: u32, budget_us: u32, payload: &[u8], now: Instant) {
        if self.handle.shared.lock().expect("session state poisoned").recv_bytes > RECV_LIMIT {
            // The application does not read: no ack, the sender keeps it.
            return;
        }
        self.note_received(i, path_seq, sent_us, now);
        self.send_ack(i, now);
        let seq = wire::extend_seq(self.reorder.next_seq(), seq);
        let hold_from = wire::extend_seq(seq, hold_from);
        self.reorder.note_floor(wire::extend_seq(seq, floor));
        let due = (budget_us > 0).then(|| {
            let owd = Duration::from_micros(self.paths[i].est.figures.min_rtt_us / 2);
            (now + Duration::from_micros(budget_us as u64)).checked_sub(owd).unwrap_or(now)
        });
        self.reorder.accept(seq, payload.to_vec(), due, hold_from, now);
    }

    fn note_received(&mut self, i: usize, path_seq: u32, sent_us: u32, now: Instant) {
        let p = &mut self.paths[i];
        match p.rx_largest {
            Some(l) if path_seq <= l => {
                let d = l - path_seq;
                if (1..=64).contains(&d) {
                    p.rx_below |= 1 << (d - 1);
                }
            }
            Some(l) => {
                let shift = path_seq - l;
                p.rx_below = if shift >= 64 { 0 } else { (p.rx_below << shift) | (1 << (shift - 1)) };
                p.rx_largest = Some(path_seq);
                p.rx_largest_at = now;
                p.rx_largest_sent_us = sent_us;
            }
            None => {
                p.rx_largest = Some(path_seq);
                p.rx_largest_at = now;
                p.rx_largest_sent_us = sent_us;
            }
        }
    }

    fn send_ack(&mut self, i: usize, now: Instant) {
        let p = &self.paths[i];
        let Some(largest) = p.rx_largest else { return };
        let ack = Packet::Ack {
            conn: self.conn,
            path: p.id,
            largest,
            below: p.rx_below,
            echo_us: p.rx_largest_sent_us,
            delay_us: now.duration_since(p.rx_largest_at).as_micros() as u32,
        };
        let mut out = Vec::new();
        wire::encode(&ack, &mut out);
        if let Some(s) = &mut self.sealer {
            s.seal(&mut out);
        }
        let _ = self.sockets[p.sock].send_to(&out, p.remote);
    }

    fn coupling(&self) -> Option<crate::path::Coupling> {
        self.fair.then(|| {
            let v: Vec<(u64, u64)> = self.paths.iter().filter(|p| p.usable()).map(|p| (p.est.figures.cwnd_bytes, p.est.figures.srtt_us)).collect();
            lia_coupling(&v)
        })
    }

    fn on_ack(&mut self, i: usize, largest: u32, below: u64, echo_us: u32, delay_us: u32, now: Instant) {
        let coupling = self.coupling();
        let now_us = self.now_us();
        let p = &mut self.paths[i];
        p.est.last_ack = Some(now);
        // Spurious when this ack's newest datagram is one that was in flight at the suspicion (Eifel's
        // test): the path was only slow. Older ones marked below a fresh probe's number prove nothing
        // (their acks may have died with the link).
        let spurious = p.suspect_in_flight.is_some_and(|(lo, hi)| (lo..=hi).contains(&largest));
        if spurious && p.est.undo_suspect() {
            log::info!("session {:08x}: path {} ({:?}) acknowledged data sent before it was suspect: active again", self.conn, p.id, p.interface);
            p.became_suspect = None;
            p.suspect_in_flight = None;
        } else if p.est.state == PathState::Suspect && p.est.on_probe_ok(now) {
            log::info!("session {:08x}: path {} ({:?}) answers again: re-admitted", self.conn, p.id, p.interface);
            p.became_suspect = None;
            p.suspect_in_flight = None;
        }
        let mut latest_rtt_us = 0;
        if p.sent.contains_key(&largest) {
            let rtt = now_us.wrapping_sub(echo_us).saturating_sub(delay_us);
            if rtt > 0 && rtt < 10_000_000 {
                p.est.on_rtt(rtt as u64);
                latest_rtt_us = rtt as u64;
            }
        }
        let mut delivered_seqs = Vec::new();
        for ps in wire::acked(largest, below) {
            let Some(s) = p.sent.remove(&ps) else { continue };
            p.acked_sent_at = p.acked_sent_at.max(Some(s.at));
            p.est.on_acked(s.bytes, coupling);
            p.delivered += s.bytes;
            p.delivered_at = now;
            p.est.on_rate_sample(p.delivered - s.delivered, now.duration_since(s.delivered_at), s.app_limited);
            if let Some(seq) = s.seq {
                delivered_seqs.push(seq);
            }
        }
        // Lost (RFC 9002 §6.1): three later datagrams acknowledged, or one
        // later and this one sent 9/8 RTT ago (a tail loss has no three later).
        let threshold = Duration::from_micros((p.est.figures.srtt_us.max(latest_rtt_us) * 9 / 8).max(1000));
        let lost: Vec<u32> = p
            .sent
            .range(..largest)
            .filter(|(k, s)| **k < largest.saturating_sub(PACKET_THRESHOLD - 1) || now.duration_since(s.at) > threshold)
            .map(|(k, _)| *k)
            .collect();
        let highest_sent = p.next_path_seq.wrapping_sub(1);
        let mut lost_seqs = Vec::new();
        for ps in lost {
            let s = p.sent.remove(&ps).expect("listed");
            p.lost_packets += 1;
            if p.est.state == PathState::Suspect {
                p.est.on_probe_lost();
            }
            p.est.on_lost(s.bytes, ps, highest_sent);
            lost_seqs.extend(s.seq);
        }
        for seq in delivered_seqs {
            if let Some(o) = self.unacked.remove(&seq) {
                self.non_droppable.remove(&seq);
                self.owed -= o.payload.len();
                self.acked_messages += 1;
                self.last_progress = now;
                self.resend.remove(&seq);
            }
        }
        for seq in lost_seqs {
            if self.unacked.contains_key(&seq) {
                self.resend.insert(seq);
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        let conn = self.conn;
        let mut lost_seqs = Vec::new();
        for i in 0..self.paths.len() {
            // The latest send time another path had acknowledged: the peer is alive.
            let acked_elsewhere = self.paths.iter().enumerate().filter(|(j, _)| *j != i).filter_map(|(_, q)| q.acked_sent_at).max();
            let p = &mut self.paths[i];
            match p.est.state {
                PathState::Joining => {
                    if matches!(self.role, Role::Connector)
                        && now.duration_since(p.join_started) < JOIN_GIVE_UP
                        && p.last_join.is_none_or(|t| now.duration_since(t) >= JOIN_RETRY)
                    {
                        p.last_join = Some(now);
                        let j = Packet::Join { conn, path: p.id, nonce: p.join_nonce, proof: handshake::proof(&self.secret, conn, p.id, p.join_nonce) };
                        let mut out = Vec::new();
                        wire::encode(&j, &mut out);
                        if let Some(s) = &mut self.sealer {
                            s.seal(&mut out);
                        }
                        let _ = self.sockets[p.sock].send_to(&out, p.remote);
                    }
                    continue;
                }
                PathState::Active => {
                    // Silent for a few RTTs with something in flight: suspect, its traffic moves at once.
                    let oldest = p.sent.values().map(|s| s.at).min();
                    let silent_since = match (oldest, p.est.last_ack) {
                        (Some(o), Some(a)) => Some(o.max(a)),
                        (Some(o), None) => Some(o),
                        _ => None,
                    };
                    // Overdue: its oldest datagram is an RTO old while another path acknowledged a later one.
                    let overdue = oldest.is_some_and(|o| now.duration_since(o) > p.est.overdue_after() && acked_elsewhere.is_some_and(|t| t > o));
                    if overdue || silent_since.is_some_and(|t| now.duration_since(t) > p.est.suspect_after()) {
                        let why = if overdue { ("overdue", p.est.overdue_after()) } else { ("silent", p.est.suspect_after()) };
                        log::info!("session {conn:08x}: path {} ({:?}) {} {:?}: suspect", p.id, p.interface, why.0, why.1);
                        p.suspect_in_flight = p.sent.keys().next().copied().zip(p.sent.keys().next_back().copied());
                        p.times_suspect += 1;
                        p.lost_packets += p.sent.len() as u64;
                        lost_seqs.extend(std::mem::take(&mut p.sent).into_values().filter_map(|s| s.seq));
                        p.est.make_suspect();
                        p.became_suspect = Some(now);
                        continue;
                    }
                    // A probe when in flight and unacknowledged for a probe timeout (RFC 9002 §6.2):
                    // its acknowledgement shows which datagrams before it were lost.
                    let pto = Duration::from_micros(p.est.figures.srtt_us + 4 * p.est.figures.rttvar_us) + PTO_SLACK;
                    let quiet_since = p.est.last_ack.map_or(p.last_sent, |a| a.max(p.last_sent));
                    if (p.sent.is_empty() && now.duration_since(p.last_sent) >= IDLE_PROBE) || (!p.sent.is_empty() && now.duration_since(quiet_since) >= pto) {
                        self.probe(i, now);
                    }
                }
                PathState::Suspect => {
                    // Probes every RTT (20–200 ms); one unanswered for a suspect-time restarts the count.
                    let every = Duration::from_micros(p.est.figures.srtt_us).clamp(Duration::from_millis(20), Duration::from_millis(200));
                    if p.sent.values().any(|s| now.duration_since(s.at) > p.est.suspect_after()) {
                        p.sent.clear();
                        p.est.on_probe_lost();
                    }
                    if now.duration_since(p.last_sent) >= every {
                        self.probe(i, now);
                    }
                }
            }
        }
        for seq in lost_seqs {
            if self.unacked.contains_key(&seq) {
                self.resend.insert(seq);
            }
        }
        let all_dead = !self.paths.is_empty() && self.paths.iter().all(|p| p.est.state == PathState::Suspect);
        self.all_dead_since = if all_dead { self.all_dead_since.or(Some(now)) } else { None };
    }

    fn probe(&mut self, i: usize, now: Instant) {
        let now_us = self.now_us();
        let p = &mut self.paths[i];
        let ps = p.next_path_seq;
        let probe = Packet::Probe { conn: self.conn, path: p.id, path_seq: ps, sent_us: now_us };
        let mut out = Vec::new();
        wire::encode(&probe, &mut out);
        if let Some(s) = &mut self.sealer {
            s.seal(&mut out);
        }
        if self.sockets[p.sock].send_to(&out, p.remote).is_ok() {
            p.next_path_seq += 1;
            p.sent.insert(ps, Sent { seq: None, bytes: 0, at: now, delivered: p.delivered, delivered_at: p.delivered_at, app_limited: true });
        }
        p.last_sent = now;
    }

    fn take_written(&mut self) {
        if self.pending.len() >= 64 {
            return;
        }
        let mut sh = self.handle.shared.lock().expect("session state poisoned");
        while self.pending.len() < 256 {
            let Some(o) = sh.send.pop_front() else { break };
            sh.send_bytes -= o.payload.len();
            self.owed += o.payload.len();
            self.pending_bytes += o.payload.len();
            self.pending.push_back(o);
        }
        self.app_queued = sh.send_bytes;
        if sh.closing && self.closing_since.is_none() {
            self.closing_since = Some(Instant::now());
        }
    }

    /// The paths as the scheduler sees them for a message of `bytes`. A
    /// path whose window is full would take this message only after the
    /// backlog behind it too (if the session waits for that path, the
    /// backlog waits with it): its predicted arrival counts the backlog, so
    /// a bulk sender uses a slower path with room (ECF's argument, Lim et
    /// al., CoNEXT 2017) and a sender with little queued waits for the fast one.
    fn views(&self, bytes: u64) -> Vec<PathView> {
        let backlog = (self.pending_bytes + self.app_queued) as u64;
        self.paths
            .iter()
            .map(|p| {
                let has_room = p.est.has_room(bytes);
                PathView {
                    usable: p.usable(),
                    has_room,
                    arrival_us: p.est.predicted_arrival_us(if has_room { bytes } else { bytes + backlog }),
                    delivery_bps: p.est.figures.delivery_bps,
                }
            })
            .collect()
    }

    fn message_view(o: &Out) -> MessageView {
        let mono = qsock::monotonic_now_ns();
        MessageView {
            bytes: o.payload.len() as u64 + wire::DATA_HEADER_BYTES as u64,
            deadline_in_us: o.flags.deadline_ns.map(|d| d.saturating_sub(mono) / 1000),
            droppable: o.flags.drop_priority != qsock::DropPriority::NON_DROPPABLE,
        }
    }

    fn send_what_fits(&mut self, now: Instant) {
        for _ in 0..512 {
            // Messages to send again first, oldest first; then new ones.
            let (out, again) = if let Some(seq) = self.resend.pop_first() {
                let Some(o) = self.unacked.get(&seq) else { continue };
                (Out { seq: o.seq, payload: o.payload.clone(), flags: o.flags }, true)
            } else if let Some(o) = self.pending.pop_front() {
                self.pending_bytes -= o.payload.len();
                (o, false)
            } else {
                return;
            };
            let msg = Self::message_view(&out);
            let views = self.views(msg.bytes);
            // A lost droppable message of a lossy session goes again only
            // while its deadline is ahead (the scheduler then judges if in time).
            let give_up = again && msg.droppable && !self.semantics.lossless() && msg.deadline_in_us.is_none_or(|d| d == 0);
            let decision = match (&self.frame_paths, again) {
                _ if give_up => Decision::Drop,
                (Some(paths), false) if paths.iter().all(|&i| views[i].usable) => {
                    if paths.iter().all(|&i| views[i].has_room) {
                        Decision::Send(paths.clone())
                    } else {
                        Decision::Wait
                    }
                }
                _ => self.scheduler.schedule(&msg, &views),
            };
            match decision {
                Decision::Wait => return self.put_back(out, again),
                Decision::Drop => {
                    if again {
                        self.given_up += 1;
                    } else {
                        self.dropped_at_sender += 1;
                    }
                    if again {
                        self.unacked.remove(&out.seq);
                        self.non_droppable.remove(&out.seq);
                    }
                    self.owed -= out.payload.len();
                }
                Decision::Send(on) => {
                    if !again {
                        if out.flags.frame_start && !out.flags.frame_end {
                            self.frame_paths = Some(on.clone());
                        } else if out.flags.frame_end {
                            self.frame_paths = None;
                        }
                    }
                    let mut any = false;
                    for (n, &i) in on.iter().enumerate() {
                        any |= self.transmit(i, &out, again || n > 0, now);
                    }
                    if !any {
                        return self.put_back(out, again);
                    }
                    // Every message is owed until acknowledged or found lost
                    // (the floor in each header needs the oldest one): a lost one
                    // goes again if lossless, non-droppable, or still in time.
                    if !again {
                        if !msg.droppable {
                            self.non_droppable.insert(out.seq);
                        }
                        self.unacked.insert(out.seq, out);
                    }
                }
            }
        }
    }

    /// Returns a message that could not go now to the head of its queue:
    /// the set to send again (`again`), or the new messages.
    fn put_back(&mut self, out: Out, again: bool) {
        if again {
            self.resend.insert(out.seq);
        } else {
            self.pending_bytes += out.payload.len();
            self.pending.push_front(out);
        }
    }

    /// Sends message `o` on path `i`; false when the socket did not take it.
    fn transmit(&mut self, i: usize, o: &Out, copy: bool, now: Instant) -> bool {
        let now_us = self.now_us();
        let mono = qsock::monotonic_now_ns();
        let p = &mut self.paths[i];
        let mut fl = 0u16;
        if o.flags.drop_priority == qsock::DropPriority::NON_DROPPABLE {
            fl |= flag::NON_DROPPABLE;
        }
        if o.flags.frame_start {
            fl |= flag::FRAME_START;
        }
        if o.flags.frame_end {
            fl |= flag::FRAME_END;
        }
        if copy {
            fl |= flag::COPY;
        }
        let budget_us = o.flags.deadline_ns.map(|d| (d.saturating_sub(mono) / 1000).clamp(1, u32::MAX as u64) as u32).unwrap_or(0);
        let ps = p.next_path_seq;
        let nd = fl & flag::NON_DROPPABLE != 0;
        let hold_from = self.non_droppable.first().copied().unwrap_or(u64::MAX).min(if nd { o.seq } else { o.seq + 1 });
        let floor = self.unacked.keys().next().copied().unwrap_or(u64::MAX).min(o.seq);
        let d = Packet::Data {
            conn: self.conn,
            path: p.id,
            flags: fl,
            seq: o.seq as u32,
            path_seq: ps,
            sent_us: now_us,
            budget_us,
            hold_from: hold_from as u32,
            floor: floor as u32,
            payload: &o.payload,
        };
        let mut out = Vec::with_capacity(wire::DATA_HEADER_BYTES + o.payload.len());
        wire::encode(&d, &mut out);
        if let Some(s) = &mut self.sealer {
            s.seal(&mut out);
        }
        let sock = &self.sockets[p.sock];
        let sent = if p.attached {
            // The message's own flags go with it, so this interface's class judges it.
            let mut flags = o.flags;
            if flags.frame_bytes.is_some() {
                flags.frame_bytes = None;
            }
            qsock::qsendto(sock.as_fd(), &out, &p.remote, &flags).map(|_| ()).map_err(|e| e.message)
        } else {
            sock.send_to(&out, p.remote).map(|_| ()).map_err(|e| e.to_string())
        };
        if let Err(e) = sent {
            log::debug!("session {:08x}: path {}: {e}", self.conn, p.id);
            return false;
        }
        p.next_path_seq += 1;
        p.last_sent = now;
        p.sent_packets += 1;
        p.sent_bytes += out.len() as u64;
        if copy {
            p.copies += 1;
            p.copy_bytes += out.len() as u64;
        }
        // App-limited: this path's window has room (the scheduler or the application gave it less than it could take).
        let app_limited = p.est.figures.in_flight_bytes + 2 * out.len() as u64 <= p.est.figures.cwnd_bytes;
        p.est.figures.in_flight_bytes += out.len() as u64;
        p.sent.insert(ps, Sent { seq: Some(o.seq), bytes: out.len() as u64, at: now, delivered: p.delivered, delivered_at: p.delivered_at, app_limited });
        true
    }

    fn deliver(&mut self, now: Instant) {
        self.reorder.release(now);
        let mut got = Vec::new();
        while let Some(m) = self.reorder.pop() {
            let _ = self.waits.record(m.waited.as_micros() as u64);
            got.push(m.payload);
        }
        let done = self.peer_final.is_some_and(|t| self.reorder.complete(t));
        let mut sh = self.handle.shared.lock().expect("session state poisoned");
        let before = sh.owed_bytes;
        sh.owed_bytes = sh.send_bytes + self.owed;
        let freed = sh.owed_bytes < before;
        let readable = !got.is_empty() || (done && !sh.peer_done);
        for m in got {
            sh.recv_bytes += m.len();
            sh.recv.push_back(m);
        }
        if done {
            sh.peer_done = true;
        }
        drop(sh);
        if readable {
            self.handle.readable.notify_all();
        }
        if freed {
            self.handle.writable.notify_all();
        }
    }

    /// `Some` once the session is over: flushed and closed on our side and
    /// the peer's Close seen, or the linger ran out, or every path died.
    fn finished(&mut self, now: Instant) -> Option<Result<(), SessionError>> {
        if self.all_dead_since.is_some_and(|t| now.duration_since(t) >= ALL_DEAD) {
            return Some(Err(SessionError::new(ErrorKind::Closed, format!("every path of the session has been silent for {ALL_DEAD:?}"))));
        }
        let since = self.closing_since?;
        let flushed = self.pending.is_empty() && self.unacked.is_empty() && self.handle.shared.lock().expect("session state poisoned").send.is_empty();
        // The linger counts from the close or the last acknowledgement: a long backlog that still drains is no failure.
        let lingered = now.duration_since(since.max(self.last_progress)) >= LINGER;
        if flushed || lingered {
            // Close again every 100 ms until the peer's arrives (a Close may be lost).
            if self.close_sent.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(100)) {
                self.close_sent = Some(now);
                let total = self.handle.shared.lock().expect("session state poisoned").next_seq;
                let c = Packet::Close { conn: self.conn, final_seq: total as u32, proof: handshake::proof(&self.secret, self.conn, 0, total as u32 as u64) };
                let mut out = Vec::new();
                wire::encode(&c, &mut out);
                if let Some(s) = &mut self.sealer {
                    s.seal(&mut out);
                }
                for p in self.paths.iter().filter(|p| p.est.state != PathState::Joining) {
                    let _ = self.sockets[p.sock].send_to(&out, p.remote);
                }
            }
            if self.peer_final.is_some() || lingered {
                return Some(if flushed {
                    Ok(())
                } else {
                    Err(SessionError::new(
                        ErrorKind::Closed,
                        format!("{} messages were still unacknowledged, none acknowledged for {LINGER:?}", self.unacked.len() + self.pending.len()),
                    ))
                });
            }
        }
        None
    }

    fn publish_info(&mut self) {
        self.last_info = Instant::now();
        let paths: Vec<PathInfo> = self.paths.iter().map(Path::info).collect();
        let mut sh = self.handle.shared.lock().expect("session state poisoned");
        let info = &mut sh.info;
        info.scheduler = self.scheduler.kind();
        info.paths = paths;
        info.dropped_at_sender = self.dropped_at_sender;
        info.given_up = self.given_up;
        info.acked = self.acked_messages;
        info.skipped = self.reorder.skipped;
        info.duplicates = self.reorder.duplicates;
        info.refused_datagrams = self.refused_datagrams;
        info.released = self.waits.len();
        info.reorder_wait_p50_us = self.waits.value_at_quantile(0.5);
        info.reorder_wait_p99_us = self.waits.value_at_quantile(0.99);
        info.reorder_wait_max_us = self.waits.max();
    }
}
