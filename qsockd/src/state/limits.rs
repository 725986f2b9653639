//! Per-user limits (config `[limits]`): how much of a device's guaranteeable
//! rate, and how many managed sockets, the sockets one uid attached may
//! hold. An entry for the uid wins over one for its group (the peer's
//! primary gid, `SO_PEERCRED`), which wins over the defaults; root is
//! unlimited unless an entry names uid 0. The default share keeps one
//! unprivileged user from taking a whole link.
use qsock::{ErrorKind, QsockError};
use serde::Deserialize;

/// The `[limits]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Share of each device's guaranteeable rate one uid may hold, per mille
    /// (1..=1000). Default 800: one user leaves a fifth to the others.
    pub default_share_permille: u32,
    /// Managed sockets one uid may hold, all devices together (≥ 1). Default 4096.
    pub default_max_sockets: u32,
    /// Entries for single uids (`id` = uid).
    pub user: Vec<LimitEntry>,
    /// Entries for groups (`id` = gid, the peer's primary group).
    pub group: Vec<LimitEntry>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { default_share_permille: 800, default_max_sockets: 4096, user: Vec::new(), group: Vec::new() }
    }
}

/// One `[[limits.user]]` or `[[limits.group]]` entry; unset fields fall back to the defaults.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitEntry {
    /// uid or gid.
    pub id: u32,
    /// Share of each device's guaranteeable rate, per mille (1..=1000).
    #[serde(default)]
    pub share_permille: Option<u32>,
    /// Managed sockets (≥ 1).
    #[serde(default)]
    pub max_sockets: Option<u32>,
}

/// The limit that applies to one peer, and where it comes from (for refusals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Share of a device's guaranteeable rate, per mille.
    pub share_permille: u32,
    /// Managed sockets.
    pub max_sockets: u32,
    /// The config key it comes from, e.g. `limits.user uid 1000`.
    pub source: String,
}

impl Limits {
    /// Checks ranges and duplicates; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let share_ok = |p: u32| (1..=1000).contains(&p);
        if !share_ok(self.default_share_permille) || self.default_max_sockets == 0 {
            anyhow::bail!("limits: default_share_permille must be 1..=1000 and default_max_sockets >= 1");
        }
        for (kind, list) in [("user", &self.user), ("group", &self.group)] {
            for (i, e) in list.iter().enumerate() {
                if e.share_permille.is_some_and(|p| !share_ok(p)) || e.max_sockets == Some(0) {
                    anyhow::bail!("limits.{kind}[{i}] (id {}): share_permille must be 1..=1000 and max_sockets >= 1", e.id);
                }
                if list[..i].iter().any(|o| o.id == e.id) {
                    anyhow::bail!("limits.{kind}: id {} is listed twice", e.id);
                }
            }
        }
        Ok(())
    }

    /// The limit for a peer with `uid` and primary `gid`.
    pub fn for_peer(&self, uid: u32, gid: u32) -> Limit {
        let entry = |kind: &str, list: &[LimitEntry], id: u32| list.iter().find(|e| e.id == id).map(|e| (format!("limits.{kind} id {id}"), e.clone()));
        match entry("user", &self.user, uid).or_else(|| entry("group", &self.group, gid)) {
            Some((source, e)) => Limit {
                share_permille: e.share_permille.unwrap_or(self.default_share_permille),
                max_sockets: e.max_sockets.unwrap_or(self.default_max_sockets),
                source,
            },
            None if uid == 0 => Limit { share_permille: 1000, max_sockets: u32::MAX, source: "root".into() },
            None => Limit { share_permille: self.default_share_permille, max_sockets: self.default_max_sockets, source: "limits defaults".into() },
        }
    }
}

impl Limit {
    /// Refuses one more socket when `held` sockets are already at the limit.
    /// Errors: [`ErrorKind::CapacityExceeded`] naming the limit.
    pub fn check_sockets(&self, uid: u32, held: u32) -> Result<(), QsockError> {
        if held >= self.max_sockets {
            return Err(QsockError::new(
                ErrorKind::CapacityExceeded,
                format!("uid {uid} may hold at most {} managed sockets ({})", self.max_sockets, self.source),
            ));
        }
        Ok(())
    }

    /// Refuses `want_bps` more on a device where the uid holds `held_bps` of
    /// `guaranteeable_bps`. Errors: [`ErrorKind::CapacityExceeded`] naming the limit.
    pub fn check_rate(&self, uid: u32, device: &str, held_bps: u64, want_bps: u64, guaranteeable_bps: u64) -> Result<(), QsockError> {
        let cap = (guaranteeable_bps as u128 * self.share_permille as u128 / 1000) as u64;
        if held_bps.saturating_add(want_bps) > cap {
            return Err(QsockError::new(
                ErrorKind::CapacityExceeded,
                format!(
                    "uid {uid} may hold at most {} ‰ of {device}'s guaranteeable {guaranteeable_bps} bit/s ({cap} bit/s, {}); it holds {held_bps} bit/s and asked {want_bps} more",
                    self.share_permille, self.source
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_entries_win_over_groups_over_defaults_and_root_is_free_unless_named() {
        let l = Limits {
            user: vec![LimitEntry { id: 1000, share_permille: Some(900), max_sockets: None }],
            group: vec![LimitEntry { id: 100, share_permille: Some(200), max_sockets: Some(5) }],
            default_share_permille: 500,
            ..Limits::default()
        };
        l.validate().unwrap();
        assert_eq!(l.for_peer(1000, 100).share_permille, 900);
        assert_eq!(l.for_peer(1000, 100).max_sockets, 4096);
        assert_eq!(l.for_peer(1001, 100), Limit { share_permille: 200, max_sockets: 5, source: "limits.group id 100".into() });
        assert_eq!(l.for_peer(65534, 65534).share_permille, 500);
        assert_eq!(l.for_peer(0, 0).max_sockets, u32::MAX);
        let e = l.for_peer(65534, 65534).check_rate(65534, "eth0", 400, 200, 1000).unwrap_err();
        assert_eq!(e.kind, ErrorKind::CapacityExceeded);
        assert!(e.message.contains("500 ‰") && e.message.contains("limits defaults"), "{}", e.message);
        assert!(l.for_peer(65534, 65534).check_rate(65534, "eth0", 300, 200, 1000).is_ok());
        assert!(l.for_peer(1001, 100).check_sockets(1001, 5).unwrap_err().message.contains("at most 5 managed sockets"));
        let bad = Limits { default_share_permille: 0, ..Limits::default() };
        assert!(bad.validate().is_err());
        let dup = Limits { user: vec![LimitEntry { id: 1, share_permille: None, max_sockets: None }; 2], ..Limits::default() };
        assert!(dup.validate().unwrap_err().to_string().contains("twice"));
    }
}
