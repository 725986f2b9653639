//! HTB's netlink options (`linux/pkt_sched.h`) as typed `#[repr(C)]`
//! structs, and the encoding of an [`HtbClass`] into them. rtnetlink has
//! no typed HTB options; the tc client sends these bytes as raw attributes.
use bytemuck::{Pod, Zeroable};
use rtnetlink::packet_core::DefaultNla;
use rtnetlink::packet_route::tc::TcOption;

/// `TCA_HTB_PARMS`: a class's `tc_htb_opt`.
pub const TCA_HTB_PARMS: u16 = 1;
/// `TCA_HTB_INIT`: the qdisc's `tc_htb_glob`.
pub const TCA_HTB_INIT: u16 = 2;
/// `TCA_HTB_RATE64`: the rate in bytes/s when it does not fit 32 bits.
pub const TCA_HTB_RATE64: u16 = 6;
/// `TCA_HTB_CEIL64`: the ceiling in bytes/s when it does not fit 32 bits.
pub const TCA_HTB_CEIL64: u16 = 7;
/// `TC_LINKLAYER_ETHERNET`.
pub const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `TC_HTB_PROTOVER`.
pub const HTB_PROTOVER: u32 = 3;
/// Largest Ethernet frame on the wire, bytes.
const MAX_FRAME: u64 = qsock_sched::MAX_FRAME_BYTES;

/// `struct tc_ratespec`: a rate as the kernel's rate tables take it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TcRatespec {
    /// log2 of the rate table's cell size (0: the kernel picks).
    pub cell_log: u8,
    /// Link layer (`TC_LINKLAYER_*`).
    pub linklayer: u8,
    /// Per-packet overhead, bytes.
    pub overhead: u16,
    /// Cell alignment, bytes.
    pub cell_align: i16,
    /// Minimum packet unit, bytes.
    pub mpu: u16,
    /// Rate, bytes/s (saturated at `u32::MAX`; the 64-bit attribute carries more).
    pub rate: u32,
}

/// `struct tc_htb_opt`: one HTB class's parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TcHtbOpt {
    /// Assured rate.
    pub rate: TcRatespec,
    /// Ceiling.
    pub ceil: TcRatespec,
    /// Rate bucket, psched ticks (64 ns) at the rate.
    pub buffer: u32,
    /// Ceiling bucket, psched ticks at the ceiling.
    pub cbuffer: u32,
    /// DRR quantum among classes of one priority, bytes.
    pub quantum: u32,
    /// Level in the tree (set by the kernel).
    pub level: u32,
    /// Priority when borrowing (0..=7, lower first).
    pub prio: u32,
}

/// `struct tc_htb_glob`: the HTB qdisc's parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TcHtbGlob {
    /// `TC_HTB_PROTOVER`.
    pub version: u32,
    /// Rate-to-quantum divisor for classes without a quantum.
    pub rate2quantum: u32,
    /// Minor of the class unclassified packets go to.
    pub defcls: u32,
    /// Debug flags.
    pub debug: u32,
    /// Packets sent directly (set by the kernel).
    pub direct_pkts: u32,
}

/// Token buckets and priority of an HTB class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HtbClass {
    /// Assured rate, bit/s.
    pub rate_bps: u64,
    /// Rate it may borrow up to, bit/s (≥ `rate_bps`).
    pub ceil_bps: u64,
    /// Depth of the rate bucket (`burst`), bytes.
    pub burst_bytes: u64,
    /// HTB priority: lower is served first when borrowing (0..=7).
    pub prio: u32,
}

impl HtbClass {
    /// A class at `rate_bps` up to `ceil_bps` with the default bucket
    /// ([`qsock_sched::default_burst_bytes`]) and priority `prio`.
    pub fn new(rate_bps: u64, ceil_bps: u64, prio: u32) -> Self {
        Self { rate_bps, ceil_bps, burst_bytes: qsock_sched::default_burst_bytes(rate_bps), prio }
    }

    /// The class as `tc_htb_opt`: buffer is the rate bucket as time at the
    /// rate; cbuffer the default bucket at the ceiling.
    pub fn opt(&self) -> TcHtbOpt {
        TcHtbOpt {
            rate: ratespec(self.rate_bps),
            ceil: ratespec(self.ceil_bps),
            buffer: xmit_ticks(self.burst_bytes.max(MAX_FRAME), self.rate_bps),
            cbuffer: xmit_ticks(qsock_sched::default_burst_bytes(self.ceil_bps), self.ceil_bps),
            quantum: (self.rate_bps / 8 / 10).clamp(MAX_FRAME + 86, 200_000) as u32,
            level: 0,
            prio: self.prio,
        }
    }

    /// The class's netlink options: `TCA_HTB_PARMS`, and the 64-bit rate
    /// and ceiling where they do not fit 32 bits of bytes/s.
    pub fn options(&self) -> Vec<TcOption> {
        let mut opts = vec![TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, bytemuck::bytes_of(&self.opt()).to_vec()))];
        for (kind, bps) in [(TCA_HTB_RATE64, self.rate_bps), (TCA_HTB_CEIL64, self.ceil_bps)] {
            if bps / 8 > u32::MAX as u64 {
                opts.push(TcOption::Other(DefaultNla::new(kind, (bps / 8).to_ne_bytes().to_vec())));
            }
        }
        opts
    }
}

/// The root HTB's options: unclassified traffic to minor `default_minor`.
pub fn root_options(default_minor: u32) -> Vec<TcOption> {
    let g = TcHtbGlob { version: HTB_PROTOVER, rate2quantum: 10, defcls: default_minor, debug: 0, direct_pkts: 0 };
    vec![TcOption::Other(DefaultNla::new(TCA_HTB_INIT, bytemuck::bytes_of(&g).to_vec()))]
}

/// `rate_bps` as a ratespec on Ethernet (bytes/s, saturated at 32 bits).
pub fn ratespec(rate_bps: u64) -> TcRatespec {
    TcRatespec { linklayer: TC_LINKLAYER_ETHERNET, rate: (rate_bps / 8).min(u32::MAX as u64) as u32, ..Default::default() }
}

/// Time to send `bytes` at `rate_bps`, in psched ticks (64 ns, `PSCHED_SHIFT`).
pub fn xmit_ticks(bytes: u64, rate_bps: u64) -> u32 {
    let ns = bytes as u128 * 8 * 1_000_000_000 / rate_bps.max(1) as u128;
    (ns >> 6).min(u32::MAX as u128) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<TcRatespec>(), 12);
        assert_eq!(std::mem::size_of::<TcHtbOpt>(), 44);
        assert_eq!(std::mem::size_of::<TcHtbGlob>(), 20);
    }

    #[test]
    fn xmit_ticks_match_psched_units() {
        // 1500 bytes at 12 Mbit/s take 1 ms = 15625 ticks of 64 ns.
        assert_eq!(xmit_ticks(1500, 12_000_000), 15_625);
    }

    #[test]
    fn ratespec_carries_bytes_per_second() {
        let r = bytemuck::bytes_of(&ratespec(10_000_000)).to_vec();
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 1_250_000);
        assert_eq!(r[1], TC_LINKLAYER_ETHERNET);
    }

    #[test]
    fn rates_beyond_32_bits_get_the_64_bit_attributes() {
        assert_eq!(HtbClass::new(10_000_000, 10_000_000, 0).options().len(), 1);
        assert_eq!(HtbClass::new(10_000_000, 40_000_000_000, 0).options().len(), 2);
    }
}
