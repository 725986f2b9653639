//! What an application asks of a session (the paper's `session_socket`
//! parameters: semantics, performance objectives, fairness).
use std::{path::PathBuf, time::Duration};

use qsock::SchedulerParams;

use crate::{ErrorKind, Objective, Result, SchedulerKind, Semantics, SessionError};

/// Largest message a session carries, bytes: one datagram on a 1500-byte
/// MTU after the IPv6 (40), UDP (8) and session
/// ([`crate::wire::DATA_HEADER_BYTES`], 32) headers, with room for tunnels.
pub const MAX_MESSAGE_BYTES: usize = 1400;

/// A session's configuration.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Delivery semantics.
    pub semantics: Semantics,
    /// Objectives, any order (their precedence is static: [`Objective::PRECEDENCE`]).
    pub objectives: Vec<Objective>,
    /// The scheduler, instead of the one the objectives choose.
    pub scheduler: Option<SchedulerKind>,
    /// Take one TCP-friendly share over all paths together (LIA, RFC 6356).
    pub fair: bool,
    /// No striping: one plain (framed) TCP connection to the peer.
    pub bypass: bool,
    /// Encrypt and authenticate every datagram ([`crate::crypto`]); messages
    /// then carry at most [`MAX_MESSAGE_BYTES`] − [`crate::crypto::OVERHEAD`]
    /// bytes. A peer that does not encrypt is refused.
    pub encrypt: bool,
    /// Largest message, bytes (1..=[`MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// How long an ordered lossy receiver waits for a missing message
    /// when the next one has no deadline.
    pub reorder_bound: Duration,
    /// Local interfaces to stripe over; empty: those qsockd manages (or,
    /// without qsockd, every interface with an address).
    pub interfaces: Vec<String>,
    /// qsockd's socket; `None`: the default path. Without a daemon the
    /// paths are plain sockets (the per-message flags then do nothing on the host).
    pub daemon: Option<PathBuf>,
    /// Scheduler of each path's socket in qsockd (a class on its interface).
    pub path_scheduler: SchedulerParams,
    /// Per-path reservations instead of `path_scheduler`, by interface name.
    pub path_schedulers: Vec<(String, SchedulerParams)>,
}

impl SessionConfig {
    /// A configuration with `semantics` and `objectives`, everything else default.
    pub fn new(semantics: Semantics, objectives: &[Objective]) -> Self {
        Self {
            semantics,
            objectives: objectives.to_vec(),
            scheduler: None,
            fair: false,
            bypass: false,
            encrypt: false,
            max_message_bytes: MAX_MESSAGE_BYTES,
            reorder_bound: Duration::from_millis(100),
            interfaces: Vec::new(),
            daemon: None,
            path_scheduler: SchedulerParams::BestEffort,
            path_schedulers: Vec::new(),
        }
    }

    /// Checks the configuration. Errors: [`ErrorKind::InvalidConfig`]
    /// (a message bound of 0 or above [`MAX_MESSAGE_BYTES`], a zero
    /// reorder bound).
    pub fn validate(&self) -> Result<()> {
        if self.max_message_bytes == 0 || self.max_message_bytes > MAX_MESSAGE_BYTES {
            return Err(SessionError::new(
                ErrorKind::InvalidConfig,
                format!("max_message_bytes {} (1..={MAX_MESSAGE_BYTES}: one datagram)", self.max_message_bytes),
            ));
        }
        if self.reorder_bound.is_zero() {
            return Err(SessionError::new(ErrorKind::InvalidConfig, "a reorder bound of 0 (an ordered lossy session would skip every late message)"));
        }
        Ok(())
    }

    /// The scheduler of the path socket on `interface`.
    pub fn scheduler_on(&self, interface: &str) -> SchedulerParams {
        self.path_schedulers.iter().find(|(n, _)| n == interface).map(|(_, s)| s.clone()).unwrap_or_else(|| self.path_scheduler.clone())
    }
}
