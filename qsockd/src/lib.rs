//! qsockd: installs qsock's root qdisc and eBPF data path on a device
//! (`init`), serves applications over a Unix socket (`run`), and restores
//! the device (`teardown`). See `docs/architecture.md`.
#![warn(missing_docs)]

pub mod config;
pub mod device;
pub mod error;
pub mod kernel;
pub mod multipath;
pub mod ops;
pub mod sched;
pub mod select;
pub mod serve;
pub mod state;

/// The eBPF object built by `build.rs` from `qsock-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/qsock.bpf.o"));
