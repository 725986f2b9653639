//! Talks to the kernel and knows nothing of sockets or policies: tc over
//! rtnetlink with typed HTB options, policy routing, link and address
//! events, sock_diag dumps, BTF offsets, network namespaces, the MPTCP path
//! manager's commands and events.
pub mod btf;
pub mod diag;
pub mod htb;
pub mod mptcp_events;
pub mod mptcp_pm;
pub mod netns;
pub mod routing;
pub mod tc;
pub mod watch;
