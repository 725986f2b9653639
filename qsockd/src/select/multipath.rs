//! Which interfaces an MPTCP connection's subflows use, and how, from its
//! intents (issue 16, item 4): TAPS `multipath` and `multipathPolicy`, as
//! given or implied ([`qsock::Intents::effective_multipath`]), together
//! with the interface preferences and the interfaces' cost.
//!
//! Intents that say nothing of multipath (neither property given, nothing
//! implied) leave the connection to qsockd's `open_subflows` (no plan).
//! Otherwise, per managed interface, in this order:
//! - Require unmet or Prohibit met: no subflow.
//! - The initial subflow's interface (the policy chose it): active.
//! - `multipath = Passive`: no subflow (the peer opens them).
//! - Avoid met: backup (used only when no active subflow can send).
//! - Handover: backup. Interactive: backup when metered, else active.
//!   Aggregate: active (throughput is the intent, which the other links
//!   alone cannot meet, so a metered link is used too).
use qsock::{Intents, Multipath, MultipathPolicy, Preference};

use super::{prefs, Candidate};

/// What one interface does for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubflowRole {
    /// A subflow that carries data.
    Active,
    /// A backup subflow (`MP_PRIO` backup): carries data only when no
    /// active subflow can.
    Backup,
    /// No subflow on it.
    None,
}

/// The role of each interface of `all` for a connection with `intents`
/// whose initial subflow uses `initial` (see the module docs), with the
/// reason, in `all`'s order; `None` when the intents say nothing of multipath.
pub fn roles(intents: &Intents, all: &[Candidate], initial: &str) -> Option<Vec<(String, SubflowRole, &'static str)>> {
    let (mode, policy) = intents.effective_multipath();
    if intents.multipath.is_none() && intents.multipath_policy.is_none() && mode == Multipath::Disabled {
        return None;
    }
    // A policy alone asks for multipath.
    let mode = if intents.multipath.is_none() { Multipath::Active } else { mode };
    let roles = all
        .iter()
        .map(|c| {
            let met = |p: Preference| intents.interfaces.iter().any(|x| x.preference == p && prefs::matches(c, &x.interface));
            let required = intents.interfaces.iter().filter(|x| x.preference == Preference::Require).all(|x| prefs::matches(c, &x.interface));
            let (role, why) = if !required || met(Preference::Prohibit) {
                (SubflowRole::None, "Require/Prohibit")
            } else if c.name == initial {
                (SubflowRole::Active, "the initial subflow's")
            } else if mode == Multipath::Disabled {
                (SubflowRole::None, "multipath disabled")
            } else if mode == Multipath::Passive {
                (SubflowRole::None, "passive: the peer opens subflows")
            } else if met(Preference::Avoid) {
                (SubflowRole::Backup, "Avoid")
            } else {
                match policy {
                    MultipathPolicy::Handover => (SubflowRole::Backup, "handover"),
                    MultipathPolicy::Interactive if c.metered => (SubflowRole::Backup, "interactive, metered"),
                    MultipathPolicy::Interactive => (SubflowRole::Active, "interactive"),
                    MultipathPolicy::Aggregate => (SubflowRole::Active, "aggregate"),
                }
            };
            (c.name.clone(), role, why)
        })
        .collect();
    Some(roles)
}

#[cfg(test)]
mod tests {
    use qsock::{Category, InterfacePreference, Resilience};

    use super::*;
    use crate::select::testing::paper_pair;

    fn role_list(intents: &Intents) -> Vec<SubflowRole> {
        roles(intents, &paper_pair(), "i1").expect("a plan").into_iter().map(|(_, r, _)| r).collect()
    }

    #[test]
    fn policies_give_the_other_link_its_role() {
        // paper_pair: i1 wired, i2 cellular and metered.
        let handover = Intents { resilience: Some(Resilience::Sensitive), ..Default::default() };
        assert_eq!(role_list(&handover), [SubflowRole::Active, SubflowRole::Backup]);
        let bulk = Intents { category: Some(Category::BulkTransfer), file_size_bytes: Some(50_000_000), ..Default::default() };
        assert_eq!(role_list(&bulk), [SubflowRole::Active, SubflowRole::Active]);
        let interactive = Intents { multipath: Some(Multipath::Active), multipath_policy: Some(MultipathPolicy::Interactive), ..Default::default() };
        assert_eq!(role_list(&interactive), [SubflowRole::Active, SubflowRole::Backup], "metered: backup");
        let passive = Intents { multipath: Some(Multipath::Passive), ..Default::default() };
        assert_eq!(role_list(&passive), [SubflowRole::Active, SubflowRole::None]);
        // Nothing said of multipath: no plan (qsockd's open_subflows decides).
        let query = Intents { category: Some(Category::Query), ..Default::default() };
        assert!(roles(&query, &paper_pair(), "i1").is_none());
        let disabled = Intents { multipath: Some(Multipath::Disabled), ..Default::default() };
        assert_eq!(role_list(&disabled), [SubflowRole::Active, SubflowRole::None]);
    }

    #[test]
    fn preferences_are_kept() {
        let mut bulk = Intents { category: Some(Category::BulkTransfer), file_size_bytes: Some(50_000_000), ..Default::default() };
        bulk.interfaces = vec![InterfacePreference::new(Preference::Prohibit, "type:metered").unwrap()];
        assert_eq!(role_list(&bulk), [SubflowRole::Active, SubflowRole::None]);
        bulk.interfaces = vec![InterfacePreference::new(Preference::Avoid, "i2").unwrap()];
        assert_eq!(role_list(&bulk), [SubflowRole::Active, SubflowRole::Backup]);
        bulk.interfaces = vec![InterfacePreference::new(Preference::Require, "type:wired").unwrap()];
        assert_eq!(role_list(&bulk), [SubflowRole::Active, SubflowRole::None]);
    }
}
