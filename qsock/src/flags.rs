//! Per-message flags of `qsend`/`qsendto` (Q.Sockets' `struct packet_flags`).
use qsock_common::{encode_tag, DROP_PRIO_MAX_DROPPABLE, DROP_PRIO_NON_DROPPABLE};
use serde::{Deserialize, Serialize};

/// Drop priority of a message: 0 is dropped first, 6 last, and
/// [`DropPriority::NON_DROPPABLE`] never (it is sent late instead).
///
/// Under pressure a message of priority `p` gives up once its predicted
/// waiting time exceeds `(p + 1) / 7` of the time left to its deadline, so
/// lower priorities make room for higher ones (Q.Sockets §2.2.3 drop flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DropPriority(u8);

impl DropPriority {
    /// Dropped first.
    pub const LOWEST: Self = Self(0);
    /// Dropped last among droppable messages.
    pub const HIGHEST_DROPPABLE: Self = Self(DROP_PRIO_MAX_DROPPABLE);
    /// Never dropped (Q.Sockets' `DWCS_NON_DROPPABLE`).
    pub const NON_DROPPABLE: Self = Self(DROP_PRIO_NON_DROPPABLE);

    /// A droppable priority 0..=6; `None` for larger values.
    pub fn droppable(level: u8) -> Option<Self> {
        (level <= DROP_PRIO_MAX_DROPPABLE).then_some(Self(level))
    }

    /// The level, 0..=7.
    pub fn level(self) -> u8 {
        self.0
    }
}

impl Default for DropPriority {
    fn default() -> Self {
        Self::HIGHEST_DROPPABLE
    }
}

/// Flags of one message. The default is "no deadline, droppable at the
/// highest droppable priority, not part of a frame".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketFlags {
    /// Absolute deadline, ns of `CLOCK_MONOTONIC` (see [`crate::monotonic_now_ns`]);
    /// kept with 256 ns resolution. Must not be in the past when sent.
    pub deadline_ns: Option<u64>,
    /// Drop priority of the message.
    pub drop_priority: DropPriority,
    /// First message of a frame (a frame is dropped as a whole, from the first
    /// dropped message to its end).
    pub frame_start: bool,
    /// Last message of a frame.
    pub frame_end: bool,
}

impl PacketFlags {
    /// The 64-bit tag that carries these flags to the kernel in `SCM_TXTIME`;
    /// layout in `qsock_common::TAG_VALID`.
    pub fn tag(&self) -> u64 {
        encode_tag(self.deadline_ns, self.drop_priority.level(), self.frame_start, self.frame_end)
    }
}
