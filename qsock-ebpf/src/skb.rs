//! Safe access to the fields of the `__sk_buff` a classifier sees.
use aya_ebpf::{bindings::__sk_buff, helpers::gen::bpf_get_socket_cookie, programs::TcContext};

/// The packet of one classifier run.
pub(crate) struct Skb(*mut __sk_buff);

impl Skb {
    /// The packet of `ctx`.
    #[inline(always)]
    pub(crate) fn of(ctx: &TcContext) -> Self {
        Self(ctx.skb.skb)
    }

    /// The sending socket's cookie (0: no socket).
    #[inline(always)]
    pub(crate) fn socket_cookie(&self) -> u64 {
        // SAFETY: the helper takes the context's own skb pointer.
        unsafe { bpf_get_socket_cookie(self.0 as *mut core::ffi::c_void) }
    }

    /// `skb->len`, bytes (link header included at clsact egress).
    #[inline(always)]
    pub(crate) fn len(&self) -> u64 {
        // SAFETY: the skb is valid for the whole program run.
        unsafe { (*self.0).len as u64 }
    }

    /// `skb->tstamp`: the tag `SCM_TXTIME` carried, or 0.
    #[inline(always)]
    pub(crate) fn tstamp(&self) -> u64 {
        // SAFETY: as in `len`.
        unsafe { (*self.0).tstamp }
    }

    /// Steers the packet into HTB class `classid` and stamps it with its
    /// enqueue time `now_ns` (the dequeue probe reads it; fq/etf, where a
    /// user's kernel has them, must not see our tag as a departure time).
    #[inline(always)]
    pub(crate) fn steer(&mut self, classid: u32, now_ns: u64) {
        // SAFETY: as in `len`; both fields are writable from tc programs.
        unsafe {
            (*self.0).priority = classid;
            (*self.0).tstamp = now_ns;
        }
    }
}
