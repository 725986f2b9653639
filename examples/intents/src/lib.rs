//! The Socket Intents experiments on qsock (see the crate description and
//! `scripts/intents.sh`).
#![warn(missing_docs)]
pub mod fetch;
pub mod page;
pub mod plot;
pub mod stats;
