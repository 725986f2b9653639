//! One served device: `qsockinit` and teardown (`install`), the runtime a
//! daemon opens on it (pinned maps, dequeue probe, scheduler modules, and
//! the steps that put a stream's plan into HTB classes and maps), and the
//! two totals it keeps right by construction: the reservations booked on
//! it and its pool of class ids.
pub mod classes;
pub mod install;
pub mod kernel;
pub mod reservations;
pub mod runtime;

pub use classes::ClassPool;
pub use install::{ifindex, init, teardown, DeviceState, BEST_EFFORT_PRIO, MANAGED_PRIO};
pub use reservations::Reservations;
pub use runtime::{DeviceRt, ModuleSettings};
