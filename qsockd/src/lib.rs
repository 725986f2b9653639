//! qsockd: installs qsock's root qdisc and eBPF data path on a device
//! (`init`), serves applications over a Unix socket (`run`), and restores
//! the device (`teardown`). See `docs/architecture.md`.
#![warn(missing_docs)]

pub mod best_effort;
pub mod books;
pub mod btf;
pub mod config;
pub mod device;
pub mod devrt;
pub mod diag;
pub mod error;
pub mod htb;
pub mod ifaces;
pub mod limits;
pub mod metrics;
pub mod netns;
pub mod rate;
pub mod registry;
pub mod report;
pub mod routing;
pub mod select;
pub mod selection;
pub mod server;
pub mod sockets;
pub mod sockinfo;
pub mod tc;
pub mod watch;

/// The eBPF object built by `build.rs` from `qsock-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/qsock.bpf.o"));
