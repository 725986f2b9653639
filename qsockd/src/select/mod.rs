//! Interface selection from intents (Socket Intents, Schmidt et al.,
//! CoNEXT 2013): TAPS interface preferences narrow the managed interfaces
//! to candidates ([`prefs`]), then a policy module behind
//! [`SelectionPolicy`] picks one and says why.
pub mod category;
pub mod earliest;
pub mod filesize;
pub mod ifaces;
pub mod multipath;
pub mod predict;
pub mod prefs;
pub mod round_robin;

use std::collections::HashMap;

use qsock::{Intents, InterfaceType};

/// What a policy knows of one managed interface.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Interface name.
    pub name: String,
    /// Type from the config.
    pub kind: InterfaceType,
    /// Metered, from the config.
    pub metered: bool,
    /// Relative cost per byte, from the config.
    pub cost: u32,
    /// Nominal downstream bandwidth, bit/s (> 0).
    pub nominal_down_bps: u64,
    /// Measured receive rate now, bit/s.
    pub rx_bps: u64,
    /// RTT, ns: measured (sock_diag), else the config's expected RTT; `None`: unknown.
    pub rtt_ns: Option<u64>,
    /// Whether `rtt_ns` was measured (else configured).
    pub rtt_measured: bool,
    /// Connections open on it now: the larger of the established TCP
    /// connections sock_diag last saw and the sockets qsockd placed there.
    pub flows: u32,
    /// Why it cannot carry the socket (down, absent, no address of the
    /// socket's family); `None`: usable.
    pub unusable: Option<String>,
}

impl Candidate {
    /// Bandwidth a new download would get, bit/s: the unused part of the
    /// nominal bandwidth, or a fair share beside the connections already
    /// there, whichever is larger (TCP shares a bottleneck about evenly).
    pub fn available_bps(&self) -> u64 {
        let free = self.nominal_down_bps.saturating_sub(self.rx_bps);
        let share = self.nominal_down_bps / (self.flows as u64 + 1);
        free.max(share).max(1)
    }

    /// RTT for the models, ns: `rtt_ns`, or 0 when unknown.
    pub fn rtt_or_zero(&self) -> u64 {
        self.rtt_ns.unwrap_or(0)
    }

    /// Whether a TAPS interface type matches this interface.
    pub fn is_type(&self, t: InterfaceType) -> bool {
        match t {
            InterfaceType::Metered => self.metered,
            k => self.kind == k,
        }
    }

    /// "rtt 12.0 ms (measured)" / "(configured)" / "rtt unknown".
    pub fn rtt_text(&self) -> String {
        match self.rtt_ns {
            Some(r) => format!("rtt {:.1} ms ({})", r as f64 / 1e6, if self.rtt_measured { "measured" } else { "configured" }),
            None => "rtt unknown".into(),
        }
    }
}

/// A policy's choice: an index into the candidates it was given, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index into the candidate slice.
    pub index: usize,
    /// The policy's reason, with the figures it used.
    pub reason: String,
}

/// An interface-selection policy module (MAM's policy modules, one chosen
/// per socket by name among those the config enables).
pub trait SelectionPolicy: Send + Sync {
    /// Name as in the config and `QosParams.policy`.
    fn name(&self) -> &'static str;
    /// Picks one of `candidates` (never empty, all usable) for a socket
    /// with `intents`. Never fails: intents are advisory.
    fn choose(&mut self, intents: &Intents, candidates: &[&Candidate]) -> Decision;
}

/// The policy named `name` (one of [`crate::config::KNOWN_POLICIES`]).
pub fn build(name: &str) -> Option<Box<dyn SelectionPolicy>> {
    Some(match name {
        "category" => Box::new(category::CategoryPolicy),
        "filesize" => Box::new(filesize::FileSizePolicy),
        "earliest_completion" => Box::new(earliest::EarliestCompletion),
        "round_robin" => Box::new(round_robin::RoundRobin::default()),
        _ => return None,
    })
}

/// The enabled policies by name.
pub fn build_all(names: &[String]) -> HashMap<String, Box<dyn SelectionPolicy>> {
    names.iter().filter_map(|n| build(n).map(|p| (n.clone(), p))).collect()
}

/// Index of the candidate with the lowest RTT (unknown RTTs last, then config order).
pub fn lowest_rtt(c: &[&Candidate]) -> usize {
    (0..c.len()).min_by_key(|&i| (c[i].rtt_ns.is_none(), c[i].rtt_ns.unwrap_or(0), i)).expect("candidates are never empty")
}

/// Index of the candidate with the most bandwidth available to a new download.
pub fn most_capacity(c: &[&Candidate]) -> usize {
    (0..c.len()).max_by_key(|&i| (c[i].available_bps(), std::cmp::Reverse(i))).expect("candidates are never empty")
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The paper's two interfaces: i1 DSL (10 ms, 6 Mbit/s), i2 LTE (70 ms, 12 Mbit/s, metered).
    pub fn paper_pair() -> Vec<Candidate> {
        let c = |name: &str, kind, metered, down, rtt_ms: u64| Candidate {
            name: name.into(),
            kind,
            metered,
            cost: if metered { 10 } else { 1 },
            nominal_down_bps: down,
            rx_bps: 0,
            rtt_ns: Some(rtt_ms * 1_000_000),
            rtt_measured: true,
            flows: 0,
            unusable: None,
        };
        vec![c("i1", InterfaceType::Wired, false, 6_000_000, 10), c("i2", InterfaceType::Cellular, true, 12_000_000, 70)]
    }
}
