//! qsock sessions: session-layer striping (Habib, Christin, Chuang,
//! *Taking Advantage of Multihoming with Session Layer Striping*). An
//! application opens a session with the delivery semantics and objectives
//! it wants; the session joins a path from each local interface to each of
//! the peer's addresses (UDP sockets attached through qsockd, so each
//! message's qsock flags apply on the path that carries it), stripes
//! messages over them with the scheduler the objectives choose, evaluates
//! the paths from its own acknowledgements, and hands the application one
//! pipe of messages.
//!
//! ```no_run
//! use qsock_session::{Semantics, Objective, SessionConfig, SessionSocket};
//! let s = SessionSocket::new(SessionConfig::new(Semantics::OrderedLossless, &[Objective::Throughput]))?
//!     .connect("10.9.0.1:7000".parse().unwrap())?;
//! s.write(b"hello", &qsock::PacketFlags::default())?;
//! s.close()?;
//! # Ok::<(), qsock_session::SessionError>(())
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod crypto;
mod engine;
mod error;
pub mod handshake;
pub mod info;
pub mod path;
pub mod reorder;
pub mod sched;
pub mod scoreboard;
mod semantics;
mod session;
pub mod wire;

pub use config::{SessionConfig, MAX_MESSAGE_BYTES};
pub use error::{ErrorKind, Result, SessionError};
pub use info::{Mode, PathInfo, SessionInfo};
pub use semantics::{scheduler_for, Objective, SchedulerKind, Semantics};
pub use session::{Session, SessionListener, SessionSocket};
