//! `qclose` and the releases qsockd makes on its own: a client connection
//! that closed, sockets closed without `qclose` (sock_diag sweeps), classes
//! that finished draining.

use qsock::{ErrorKind, QsockError};

use super::{Registry, MISSED_SWEEPS, RECLAIM_GRACE};
use crate::{
    device::runtime::{drain, rebalance},
    state::sockets::{Booking, Managed, UNCLAIMED},
};

impl Registry {
    /// `qclose` (or cleanup of a closed socket): classification stops at
    /// once (errors: [`ErrorKind::NotManaged`] only; a kernel step that
    /// fails is logged and retried); an own class goes now if it is empty, else once what it holds
    /// has been sent ([`Registry::sweep`]), and only then is its rate
    /// released. A shared class shrinks at once.
    pub async fn close(&mut self, cookie: u64) -> Result<(), QsockError> {
        if self.release_mptcp(cookie).await {
            return Ok(());
        }
        self.close_stream(cookie).await
    }

    /// [`Registry::close`] of one stream (a socket, or a subflow of a
    /// managed MPTCP connection). Errors: [`ErrorKind::NotManaged`].
    pub(crate) async fn close_stream(&mut self, cookie: u64) -> Result<(), QsockError> {
        let m = self.sockets.remove(cookie).ok_or_else(|| QsockError::new(ErrorKind::NotManaged, "the socket is not managed by qsock"))?;
        self.books.remove(cookie);
        // Released either way: the data path no longer knows it; a class
        // step that failed is retried (draining classes by the sweep,
        // class sizes by the next operation).
        if let Err(e) = self.release_on_device(cookie, &m).await {
            log::warn!("socket {cookie} released; {}: {e}", m.device);
        }
        Ok(())
    }

    /// Takes socket `cookie`, managed as `m`, off its device: map entries,
    /// module, burst at once; an own class's rate once it has drained.
    pub(crate) async fn release_on_device(&mut self, cookie: u64, m: &Managed) -> Result<(), QsockError> {
        let dev = self.devices.get_mut(&m.device).expect("managed sockets have open devices");
        dev.kernel.remove_policy(cookie);
        dev.kernel.remove_counters(cookie);
        dev.module(m.params.scheduler.name())?.remove(cookie);
        // The burst goes now; an own class keeps its rate until it has drained.
        dev.reservations.unbook(Booking { rate_bps: 0, burst_bytes: m.booking.burst_bytes });
        if m.own_class {
            dev.draining.push((m.minor, m.booking.rate_bps));
            Ok(drain(dev).await?)
        } else {
            dev.reservations.unbook(Booking { rate_bps: m.booking.rate_bps, burst_bytes: 0 });
            Ok(rebalance(dev, false).await?)
        }
    }

    /// Releases every socket attached over connection `conn` (it closed:
    /// the client exited or dropped its `Client`).
    pub async fn release_connection(&mut self, conn: u64) {
        for c in self.sockets.of_conn(conn) {
            log::info!("client connection {conn} closed; releasing socket {c}");
            let _ = self.close_stream(c).await;
        }
        let conns: Vec<u64> = self.connections.iter().filter(|(_, c)| c.owner.conn == conn).map(|(a, _)| *a).collect();
        for app in conns {
            self.release_mptcp(app).await;
        }
    }

    /// Releases the sockets their processes closed without `qclose`: a
    /// managed socket a sock_diag sweep saw held before and no longer sees
    /// (closed: gone, or orphaned while TCP finishes). `held` is that sweep
    /// (taken without the registry's lock: its cost grows with the sockets
    /// of the namespace), begun at `taken_ns`; sockets taken on later are
    /// left to the next sweep. A socket never seen (not yet bound or connected)
    /// is left alone; it is released with its client connection, or, if
    /// recovered after a restart and not claimed within [`RECLAIM_GRACE`],
    /// then. Returns the released cookies.
    pub async fn release_closed(&mut self, held: &std::collections::HashSet<u64>, taken_ns: u64) -> Vec<u64> {
        let grace_over = self.started.elapsed() >= RECLAIM_GRACE;
        let mut closed = Vec::new();
        let mut newly_seen = Vec::new();
        let swept: Vec<(u64, bool, bool)> = self
            .sockets
            .iter()
            .filter(|(_, m)| m.since_ns < taken_ns)
            .map(|(c, m)| (c, held.contains(&c), m.held_seen || (grace_over && m.conn == UNCLAIMED)))
            .collect();
        for (cookie, is_held, releasable) in swept {
            let was_seen = self.sockets.get(cookie).is_some_and(|m| m.held_seen);
            let missed = self.sockets.note_sweep(cookie, is_held);
            if is_held && !was_seen {
                newly_seen.push(cookie);
            }
            // A dump is not a snapshot: sockets closing meanwhile can make it skip an open one. Twice in a row is not chance.
            if !is_held && releasable && missed >= MISSED_SWEEPS {
                closed.push(cookie);
            }
        }
        for c in newly_seen {
            self.record(c);
        }
        for c in &closed {
            log::info!("socket {c} was closed without qclose; released");
            let _ = self.close(*c).await;
        }
        closed
    }

    /// Removes classes that finished draining. Called periodically.
    pub async fn sweep(&mut self) {
        for dev in self.devices.values_mut() {
            if !dev.draining.is_empty() {
                if let Err(e) = drain(dev).await {
                    log::warn!("{}: {e}", dev.state.device);
                }
            }
        }
    }
}
