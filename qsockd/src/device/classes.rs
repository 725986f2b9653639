//! The class ids of one device: free (no class in the kernel), parked (a
//! class exists, unused, ready for the next socket with one class change
//! instead of an add) or taken (serving a socket). Creating or deleting an
//! HTB class makes the kernel walk every class of the qdisc
//! (`tc_bind_tclass`), so with thousands of classes a change is ~30x
//! cheaper than an add and ~80x cheaper than a delete (README, control
//! costs). A minor is in at most one of the sets.
use std::collections::BTreeSet;

use qsock_common::{FIRST_SOCKET_MINOR, LAST_SOCKET_MINOR};

/// The class-id pool of one device.
#[derive(Clone, Debug)]
pub struct ClassPool {
    free: BTreeSet<u32>,
    parked: BTreeSet<u32>,
    max_parked: u32,
}

impl ClassPool {
    /// Every socket minor free; at most `max_parked` classes kept parked.
    pub fn new(max_parked: u32) -> Self {
        Self { free: (FIRST_SOCKET_MINOR..=LAST_SOCKET_MINOR).collect(), parked: BTreeSet::new(), max_parked }
    }

    /// Parked classes, count.
    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }

    /// Whether `minor` is free (no class of ours has it).
    pub fn is_free(&self, minor: u32) -> bool {
        self.free.contains(&minor)
    }

    /// Whether another released class may be parked rather than deleted.
    pub fn may_park(&self) -> bool {
        self.parked.len() < self.max_parked as usize
    }

    /// Takes the lowest parked class, if any (the caller changes it to what
    /// its stream needs, and gives it back with [`ClassPool::park`] if that fails).
    pub fn take_parked(&mut self) -> Option<u32> {
        self.parked.pop_first()
    }

    /// Takes the lowest free minor (the caller adds its class, and gives it
    /// back with [`ClassPool::release`] if that fails).
    pub fn take_free(&mut self) -> Option<u32> {
        self.free.pop_first()
    }

    /// Takes `minor` out of the free set (a recovered socket's class, or a
    /// stale class found in the kernel); false if it was not free.
    pub fn claim(&mut self, minor: u32) -> bool {
        self.free.remove(&minor)
    }

    /// `minor`'s class is parked (exists, unused).
    pub fn park(&mut self, minor: u32) {
        self.free.remove(&minor);
        self.parked.insert(minor);
    }

    /// `minor` has no class in the kernel any more.
    pub fn release(&mut self, minor: u32) {
        self.parked.remove(&minor);
        self.free.insert(minor);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A minor is never both free and parked, none is lost, and taken
        /// ones are exactly those in neither set.
        #[test]
        fn every_minor_is_in_one_place(ops in prop::collection::vec((0u8..5, any::<u16>()), 0..300)) {
            let mut pool = ClassPool::new(8);
            let mut taken: BTreeSet<u32> = BTreeSet::new();
            for (op, k) in ops {
                match op {
                    0 => if let Some(m) = pool.take_free() { taken.insert(m); },
                    1 => if let Some(m) = pool.take_parked() { taken.insert(m); },
                    2 => if let Some(&m) = taken.iter().nth(k as usize % taken.len().max(1)) {
                        taken.remove(&m);
                        if pool.may_park() { pool.park(m) } else { pool.release(m) }
                    },
                    3 => if let Some(&m) = taken.iter().nth(k as usize % taken.len().max(1)) {
                        taken.remove(&m);
                        pool.release(m);
                    },
                    _ => {
                        let m = FIRST_SOCKET_MINOR + k as u32 % 64;
                        if pool.claim(m) { taken.insert(m); }
                    }
                }
                prop_assert!(pool.parked.is_disjoint(&pool.free));
                prop_assert!(pool.parked.len() <= 8);
                let all = pool.free.len() + pool.parked.len() + taken.len();
                prop_assert_eq!(all as u32, LAST_SOCKET_MINOR - FIRST_SOCKET_MINOR + 1);
                prop_assert!(taken.iter().all(|m| !pool.free.contains(m) && !pool.parked.contains(m)));
            }
        }
    }
}
