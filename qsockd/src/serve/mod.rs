//! What qsockd serves: the request loop on its Unix socket and the
//! housekeeping tick, subscriptions to subflow events, the figures of `qinfo` and `qsockctl list`, and the
//! OpenMetrics endpoint.
pub mod events;
pub mod metrics;
pub mod report;
pub mod server;
