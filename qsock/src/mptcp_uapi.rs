//! The kernel's MPTCP socket-option structs (`include/uapi/linux/mptcp.h`,
//! Linux 6.5+). The userspace headers of the distribution (6.1) lack
//! `MPTCP_FULL_INFO`, so they are defined here from the kernel's uapi; the
//! kernel reports its own sizes in every answer, and the reader checks them.

/// `SOL_MPTCP`: the socket-option level of MPTCP options.
pub const SOL_MPTCP: libc::c_int = 284;
/// `IPPROTO_MPTCP`.
pub const IPPROTO_MPTCP: libc::c_int = 262;
/// `MPTCP_INFO`: connection-level counters (`struct mptcp_info`).
pub const MPTCP_INFO: libc::c_int = 1;
/// `MPTCP_FULL_INFO`: connection info plus each subflow's id, addresses and
/// `tcp_info`, read under one socket lock (consistent).
pub const MPTCP_FULL_INFO: libc::c_int = 4;

/// `struct mptcp_info` (kernel 6.18 layout; a shorter kernel copy leaves
/// the tail zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MptcpInfo {
    pub subflows: u8,
    pub add_addr_signal: u8,
    pub add_addr_accepted: u8,
    pub subflows_max: u8,
    pub add_addr_signal_max: u8,
    pub add_addr_accepted_max: u8,
    pub flags: u32,
    pub token: u32,
    pub write_seq: u64,
    pub snd_una: u64,
    pub rcv_nxt: u64,
    pub local_addr_used: u8,
    pub local_addr_max: u8,
    pub csum_enabled: u8,
    pub retransmits: u32,
    pub bytes_retrans: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bytes_acked: u64,
    pub subflows_total: u8,
    pub reserved: [u8; 3],
    pub last_data_sent: u32,
    pub last_data_recv: u32,
    pub last_ack_recv: u32,
}

/// `struct mptcp_subflow_addrs`: two `__kernel_sockaddr_storage` (local,
/// remote), each read as `sockaddr_in`/`sockaddr_in6` by its family.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SubflowAddrs {
    pub local: libc::sockaddr_storage,
    pub remote: libc::sockaddr_storage,
}

/// `struct mptcp_subflow_info`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SubflowInfo {
    /// The kernel's per-connection subflow id (1 for the initial subflow,
    /// then counting up; never reused within a connection).
    pub id: u32,
    pub addrs: SubflowAddrs,
}

/// `struct mptcp_full_info`: sizes in and out, and user pointers to the
/// arrays the kernel fills.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FullInfo {
    pub size_tcpinfo_kernel: u32,
    pub size_tcpinfo_user: u32,
    pub size_sfinfo_kernel: u32,
    pub size_sfinfo_user: u32,
    pub num_subflows: u32,
    pub size_arrays_user: u32,
    pub subflow_info: u64,
    pub tcp_info: u64,
    pub mptcp_info: MptcpInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_uapi() {
        // Offsets the kernel fixes (MIN_FULL_INFO_OPTLEN_SIZE = 40, BUILD_BUG_ON in sockopt.c).
        assert_eq!(std::mem::offset_of!(FullInfo, mptcp_info), 40);
        assert_eq!(std::mem::offset_of!(MptcpInfo, token), 12);
        assert_eq!(std::mem::offset_of!(MptcpInfo, bytes_acked), 72);
        assert_eq!(std::mem::size_of::<MptcpInfo>(), 96);
        // u32 id, 4 bytes of padding (the storage is 8-aligned), 2 × 128.
        assert_eq!(std::mem::size_of::<SubflowInfo>(), 264);
    }
}
