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
//!
//! Across connections ([`yielded`]): a capacity-seeking connection's
//! extra subflow on an interface that a latency-bound connection's initial
//! subflow uses is a backup while that connection lives, so queries keep
//! the low-latency link the category policy gave them (Socket Intents §5.1)
//! instead of queuing behind bulk data, and the bulk keeps its own link.
use std::collections::HashMap;

use qsock::{CapacityProfile, Category, Intents, Multipath, MultipathPolicy, Preference};

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

/// How a connection weighs against the host's other connections on an
/// interface they share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// Latency-bound: category query, control traffic or keep-alives (as
    /// given or implied by a low-latency capacity profile), or TAPS
    /// `multipathPolicy` Interactive.
    Latency,
    /// Capacity-seeking: category bulk transfer (or the capacity-seeking
    /// profile), or the scavenger profile.
    Capacity,
    /// Neither (a stream, or nothing said).
    Indifferent,
}

/// The [`Urgency`] of a connection with `intents`; latency wins when the
/// intents say both.
pub fn urgency(intents: &Intents) -> Urgency {
    let latency = matches!(intents.effective_category(), Some(Category::Query | Category::ControlTraffic | Category::KeepAlives))
        || intents.multipath_policy == Some(MultipathPolicy::Interactive);
    let capacity = intents.effective_category() == Some(Category::BulkTransfer) || intents.capacity_profile == Some(CapacityProfile::Scavenger);
    match (latency, capacity) {
        (true, _) => Urgency::Latency,
        (false, true) => Urgency::Capacity,
        _ => Urgency::Indifferent,
    }
}

/// The role a connection's subflow on interface `name` takes, given the
/// role its own plan gives it (`role`), the connection's `urgency`, the
/// interface of its initial subflow (`initial`), and whether another,
/// latency-bound, connection's initial subflow uses `name`
/// (`latency_bound_there`): an active subflow of a capacity-seeking
/// connection becomes a backup there, except on its own initial interface.
pub fn yielded(role: SubflowRole, urgency: Urgency, name: &str, initial: &str, latency_bound_there: bool) -> SubflowRole {
    if role == SubflowRole::Active && urgency == Urgency::Capacity && name != initial && latency_bound_there {
        SubflowRole::Backup
    } else {
        role
    }
}

/// What a connection's intents ask of its subflows, as the path manager keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Each interface's role ([`roles`]); an interface not named is Active.
    pub roles: HashMap<String, SubflowRole>,
    /// How the connection weighs against the host's others on a shared interface.
    pub urgency: Urgency,
    /// The interface of its initial subflow.
    pub initial: String,
}

/// An interface's role for a connection, with why: (interface, role, reason).
pub type Reasoned = (String, SubflowRole, &'static str);

/// The plan of a connection with `intents` whose initial subflow leaves by
/// `initial`, with each role's reason (for the log); `None` when the
/// intents say nothing of multipath and the connection is
/// [`Urgency::Indifferent`] (qsockd's `open_subflows` alone decides).
pub fn plan(intents: &Intents, all: &[Candidate], initial: &str) -> Option<(Plan, Vec<Reasoned>)> {
    let urgency = urgency(intents);
    let listed = roles(intents, all, initial);
    if listed.is_none() && urgency == Urgency::Indifferent {
        return None;
    }
    let listed = listed.unwrap_or_default();
    let roles = listed.iter().map(|(n, r, _)| (n.clone(), *r)).collect();
    Some((Plan { roles, urgency, initial: initial.to_string() }, listed))
}

/// The role of each interface of `all` for a connection with `intents`
/// whose initial subflow uses `initial` (see the module docs), with the
/// reason, in `all`'s order; `None` when the intents say nothing of multipath.
pub fn roles(intents: &Intents, all: &[Candidate], initial: &str) -> Option<Vec<Reasoned>> {
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
    fn bulk_yields_the_link_queries_use_and_nothing_else() {
        let bulk = Intents { category: Some(Category::BulkTransfer), ..Default::default() };
        let query = Intents { category: Some(Category::Query), multipath_policy: Some(MultipathPolicy::Aggregate), ..Default::default() };
        let interactive = Intents { multipath_policy: Some(MultipathPolicy::Interactive), ..Default::default() };
        let scavenger = Intents { capacity_profile: Some(CapacityProfile::Scavenger), ..Default::default() };
        let low_latency = Intents { capacity_profile: Some(CapacityProfile::LowLatencyInteractive), ..Default::default() };
        assert_eq!([urgency(&bulk), urgency(&scavenger)], [Urgency::Capacity; 2]);
        assert_eq!([urgency(&query), urgency(&interactive), urgency(&low_latency)], [Urgency::Latency; 3]);
        assert_eq!(urgency(&Intents::default()), Urgency::Indifferent);
        let both = Intents { category: Some(Category::BulkTransfer), multipath_policy: Some(MultipathPolicy::Interactive), ..Default::default() };
        assert_eq!(urgency(&both), Urgency::Latency, "latency wins");

        use SubflowRole::*;
        assert_eq!(yielded(Active, Urgency::Capacity, "i1", "i2", true), Backup);
        assert_eq!(yielded(Active, Urgency::Capacity, "i1", "i2", false), Active, "no query there");
        assert_eq!(yielded(Active, Urgency::Capacity, "i2", "i2", true), Active, "its own initial interface");
        for u in [Urgency::Latency, Urgency::Indifferent] {
            assert_eq!(yielded(Active, u, "i1", "i2", true), Active, "{u:?} does not yield");
        }
        assert_eq!(yielded(None, Urgency::Capacity, "i1", "i2", true), None, "the plan's own roles stand");
        assert_eq!(yielded(Backup, Urgency::Capacity, "i1", "i2", false), Backup);
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
