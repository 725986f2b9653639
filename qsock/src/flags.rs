//! Per-message flags of `qsend`/`qsendto` (Q.Sockets' `struct packet_flags`).
use qsock_common::{encode_frame_tag, encode_tag, DROP_PRIO_MAX_DROPPABLE, DROP_PRIO_NON_DROPPABLE};
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
    /// kept with 256 ns resolution. A deadline already past when the
    /// message is sent is a policy matter: the data path drops the message
    /// if it is droppable, else sends it late, and counts it either way
    /// (`qinfo`'s `past_deadline_units`).
    pub deadline_ns: Option<u64>,
    /// Drop priority of the message.
    pub drop_priority: DropPriority,
    /// First message of a frame. A frame (the messages up to `frame_end`) is
    /// judged once, at this message, and then sent whole or dropped whole.
    pub frame_start: bool,
    /// Last message of a frame.
    pub frame_end: bool,
    /// On a `frame_start` message: the whole frame's size on the wire,
    /// bytes (every message's payload plus its IP, UDP and link headers;
    /// [`datagram_wire_bytes`] gives one message's). The data path then
    /// judges the frame at its real size. Travels in the same tag; frames
    /// above 16 MiB are declared as 16 MiB, and with a deadline more than
    /// about 4.5 min away the size is not sent.
    pub frame_bytes: Option<u32>,
}

/// Bytes one datagram with `payload` bytes occupies on an Ethernet link:
/// the payload plus UDP (8), IPv4 (20) or IPv6 (40), and Ethernet (14)
/// headers.
pub fn datagram_wire_bytes(payload: usize, ipv6: bool) -> u32 {
    (payload + 8 + if ipv6 { 40 } else { 20 } + 14).min(u32::MAX as usize) as u32
}

impl PacketFlags {
    /// The 64-bit tag that carries these flags to the kernel in `SCM_TXTIME`,
    /// for a message sent at `now_ns` (`CLOCK_MONOTONIC`); layout in
    /// `qsock_common::TAG_VALID`.
    pub fn tag_at(&self, now_ns: u64) -> u64 {
        let prio = self.drop_priority.level();
        if let (true, Some(bytes)) = (self.frame_start, self.frame_bytes) {
            if let Some(tag) = encode_frame_tag(self.deadline_ns, now_ns, prio, self.frame_end, bytes as u64) {
                return tag;
            }
        }
        encode_tag(self.deadline_ns, prio, self.frame_start, self.frame_end)
    }
}
