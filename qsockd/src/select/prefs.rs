//! TAPS interface preferences (RFC 9622 §6.2) over the managed interfaces:
//! Require and Prohibit filter and fail when nothing is left; Prefer and
//! Avoid narrow only when something is left.
use qsock::{ErrorKind, InterfacePreference, InterfaceSelector, Preference, QsockError};

use super::Candidate;

pub(crate) fn matches(c: &Candidate, s: &InterfaceSelector) -> bool {
    match s {
        InterfaceSelector::Name(n) => &c.name == n,
        InterfaceSelector::Type(t) => c.is_type(*t),
    }
}

/// Indices of `all` a socket with `prefs` may use, in config order, and
/// what each preference did (for the decision's reason).
///
/// Errors: [`ErrorKind::InvalidParams`] when a preference names an
/// interface qsockd does not manage; [`ErrorKind::NoInterface`] when no
/// usable interface is left after Require/Prohibit (the message says why
/// each interface was ruled out).
pub fn apply(prefs: &[InterfacePreference], all: &[Candidate]) -> Result<(Vec<usize>, Vec<String>), QsockError> {
    for p in prefs {
        if let InterfaceSelector::Name(n) = &p.interface {
            if !all.iter().any(|c| &c.name == n) {
                let managed: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
                return Err(QsockError::new(
                    ErrorKind::InvalidParams,
                    format!("interface preference names {n:?}, which qsockd does not manage (managed: {})", managed.join(", ")),
                ));
            }
        }
    }
    let mut ruled_out: Vec<Option<String>> = all.iter().map(|c| c.unusable.clone()).collect();
    for p in prefs.iter().filter(|p| matches!(p.preference, Preference::Require | Preference::Prohibit)) {
        for (i, c) in all.iter().enumerate() {
            let m = matches(c, &p.interface);
            let out = match p.preference {
                Preference::Require => !m,
                _ => m,
            };
            if out && ruled_out[i].is_none() {
                ruled_out[i] = Some(format!("{:?} {}", p.preference, p.interface).to_lowercase());
            }
        }
    }
    let mut set: Vec<usize> = (0..all.len()).filter(|&i| ruled_out[i].is_none()).collect();
    if set.is_empty() {
        let why: Vec<String> = all.iter().zip(&ruled_out).map(|(c, w)| format!("{}: {}", c.name, w.as_deref().unwrap_or("?"))).collect();
        return Err(QsockError::new(
            ErrorKind::NoInterface,
            if all.is_empty() {
                "qsockd manages no interfaces (config [[interfaces]])".to_string()
            } else {
                format!("no managed interface can carry the socket ({})", why.join("; "))
            },
        ));
    }
    let mut notes = Vec::new();
    for p in prefs.iter().filter(|p| matches!(p.preference, Preference::Prefer | Preference::Avoid)) {
        let want = p.preference == Preference::Prefer;
        let narrowed: Vec<usize> = set.iter().copied().filter(|&i| matches(&all[i], &p.interface) == want).collect();
        if narrowed.is_empty() {
            notes.push(format!("{:?} {} left nothing, ignored", p.preference, p.interface).to_lowercase());
        } else if narrowed.len() < set.len() {
            notes.push(format!("{:?} {}", p.preference, p.interface).to_lowercase());
            set = narrowed;
        }
    }
    Ok((set, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::testing::paper_pair;
    use qsock::InterfaceType;

    fn pref(p: Preference, s: &str) -> InterfacePreference {
        InterfacePreference::new(p, s).unwrap()
    }

    #[test]
    fn require_and_prohibit_are_hard() {
        let all = paper_pair();
        assert_eq!(apply(&[pref(Preference::Require, "i2")], &all).unwrap().0, [1]);
        assert_eq!(apply(&[pref(Preference::Prohibit, "type:metered")], &all).unwrap().0, [0]);
        let e = apply(&[pref(Preference::Require, "i2"), pref(Preference::Prohibit, "type:cellular")], &all).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoInterface);
        assert!(e.message.contains("prohibit type:cellular"), "{}", e.message);
        let e = apply(&[pref(Preference::Require, "wlan9")], &all).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParams);
    }

    #[test]
    fn prefer_and_avoid_only_narrow() {
        let mut all = paper_pair();
        assert_eq!(apply(&[pref(Preference::Prefer, "type:cellular")], &all).unwrap().0, [1]);
        assert_eq!(apply(&[pref(Preference::Avoid, "type:metered")], &all).unwrap().0, [0]);
        all[0].unusable = Some("down".into());
        // The only usable interface is avoided: it is still used.
        let (set, notes) = apply(&[pref(Preference::Avoid, "type:metered")], &all).unwrap();
        assert_eq!(set, [1]);
        assert!(notes[0].contains("ignored"));
        // A down interface cannot be required into use.
        assert_eq!(apply(&[pref(Preference::Require, "i1")], &all).unwrap_err().kind, ErrorKind::NoInterface);
        assert!(all[1].is_type(InterfaceType::Metered));
    }
}
