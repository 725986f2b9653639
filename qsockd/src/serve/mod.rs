//! What qsockd serves: the request loop on its Unix socket and the
//! housekeeping tick, the figures of `qinfo` and `qsockctl list`, and the
//! OpenMetrics endpoint.
pub mod metrics;
pub mod report;
pub mod server;
