//! Subflow events for the application that holds an MPTCP connection (the
//! "further work" of Hesmans and Bonaventure 2016: the application hears
//! when a subflow is established or closed and when an interface it uses
//! goes down, instead of polling the listing). qsockd, the path manager,
//! follows the kernel's `mptcp_pm` events and sends those of the caller's
//! connection over a connection of their own to qsockd; the socket travels
//! with the subscription, so a caller hears only of connections it holds.
use std::{
    net::SocketAddr,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    client::{next_on_stream, open_stream, unexpected},
    error::Result,
    proto::{Request, Response},
    Client,
};

/// Something that happened to a subflow of the watched connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubflowEvent {
    /// The connection is fully established (its first data were
    /// exchanged, RFC 8684 §3.1): subflows can be joined from now on.
    ConnectionEstablished {
        /// The initial subflow's local end.
        local: SocketAddr,
        /// Its remote end.
        remote: SocketAddr,
        /// The interface holding the local address in qsockd's namespace.
        interface: Option<String>,
    },
    /// A further subflow is established.
    Established {
        /// Local end.
        local: SocketAddr,
        /// Remote end.
        remote: SocketAddr,
        /// The interface holding the local address in qsockd's namespace.
        interface: Option<String>,
        /// Opened as a backup subflow.
        backup: bool,
    },
    /// A subflow closed.
    Closed {
        /// Local end.
        local: SocketAddr,
        /// Remote end.
        remote: SocketAddr,
        /// The interface holding the local address, if it still does.
        interface: Option<String>,
        /// The subflow's socket error (an errno, e.g. 110 `ETIMEDOUT`), if any.
        error: Option<i32>,
    },
    /// A subflow's backup flag changed: the peer's `MP_PRIO`, or this end's
    /// through qsockd ([`crate::qsubflow_set_backup`]).
    BackupChanged {
        /// Local end.
        local: SocketAddr,
        /// Remote end.
        remote: SocketAddr,
        /// Backup now.
        backup: bool,
    },
    /// A managed interface carrying one of the connection's subflows went
    /// down: qsockd withdraws its subflows there (their `Closed` follows).
    InterfaceDown {
        /// The interface.
        interface: String,
    },
    /// qsockd found a subflow silent while the connection waited on it
    /// (a blackhole: no link event) and withdraws it (its `Closed` follows).
    Silent {
        /// Local end.
        local: SocketAddr,
        /// Remote end.
        remote: SocketAddr,
        /// The interface holding the local address.
        interface: Option<String>,
    },
    /// The connection is gone; no event follows.
    ConnectionClosed,
    /// The subscriber read too slowly and `count` events were dropped
    /// (re-read the listing, [`crate::qsubflows`], to catch up).
    Missed {
        /// Events dropped.
        count: u64,
    },
}

/// A subscription to the subflow events of one MPTCP connection; events
/// come in the order qsockd saw them. Blocking use: iterate, or call
/// [`SubflowEvents::next_within`] with a bound.
#[derive(Debug)]
pub struct SubflowEvents {
    conn: Option<OwnedFd>,
}

impl SubflowEvents {
    /// The next event, waiting at most `wait`; `Ok(None)` when none came in
    /// time. After [`SubflowEvent::ConnectionClosed`] or an error the
    /// subscription is over and every later call answers `Ok(None)` at once.
    ///
    /// Errors: [`crate::ErrorKind::DaemonUnavailable`] (qsockd stopped or
    /// restarted: subscribe again once it is back), [`crate::ErrorKind::Daemon`].
    pub fn next_within(&mut self, wait: Duration) -> Result<Option<SubflowEvent>> {
        let Some(fd) = &self.conn else { return Ok(None) };
        let got = next_on_stream(fd, Instant::now() + wait);
        match got {
            Ok(Some(Response::SubflowEvent(ev))) => {
                if ev == SubflowEvent::ConnectionClosed {
                    self.conn = None;
                }
                Ok(Some(ev))
            }
            Ok(None) => Ok(None),
            Ok(Some(r)) => {
                self.conn = None;
                Err(unexpected(r))
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

impl Iterator for SubflowEvents {
    type Item = Result<SubflowEvent>;

    /// Blocks until the next event; ends after
    /// [`SubflowEvent::ConnectionClosed`] or the first error.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.conn.as_ref()?;
            match self.next_within(Duration::from_secs(3600)) {
                Ok(Some(ev)) => return Some(Ok(ev)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Client {
    /// Subscribes to the subflow events of the MPTCP connection `fd`, on a
    /// connection to qsockd of its own (this client's calls are not held
    /// up). See [`qsubflow_events`].
    pub fn subflow_events(&self, fd: BorrowedFd<'_>) -> Result<SubflowEvents> {
        let (conn, first) = open_stream(self.path(), &Request::SubflowEvents, Some(fd), self.wait())?;
        match first {
            Response::Ok => Ok(SubflowEvents { conn: Some(conn) }),
            r => Err(unexpected(r)),
        }
    }
}

/// Subscribes to the subflow events of the MPTCP connection `fd`: subflows
/// established, closed, backup changes, a managed interface going down, a
/// subflow found silent, the connection's end. Events from the moment of
/// the subscription on; what exists already is in [`crate::qsubflows`].
///
/// Errors: [`crate::ErrorKind::NotMultipath`] (not MPTCP, or fallen back to
/// TCP), [`crate::ErrorKind::Unsupported`] (qsockd runs without multipath),
/// [`crate::ErrorKind::DaemonUnavailable`].
pub fn qsubflow_events(fd: impl AsFd) -> Result<SubflowEvents> {
    crate::with_default(|c| c.subflow_events(fd.as_fd()))
}
