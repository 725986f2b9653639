//! The scheduler modules qsockd hosts itself (EDF and DWCS live in their
//! own crates under `schedulers/`): a guaranteed rate, and best effort for
//! sockets that only want an interface.
pub mod best_effort;
pub mod rate;
