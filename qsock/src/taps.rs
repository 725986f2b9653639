//! TAPS transport properties that choose an interface (RFC 9622 §6.2):
//! the capacity profile and interface preferences (Require / Prefer /
//! Avoid / Prohibit, by interface name or type).
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{
    error::{ErrorKind, QsockError, Result},
    params::Category,
};

/// `connCapacityProfile` (RFC 9622 §8.1.6): what the application wants of
/// the path, in TAPS terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapacityProfile {
    /// No particular wish.
    Default,
    /// Less than best effort: background traffic that yields to everything.
    Scavenger,
    /// Low latency for a human waiting (requests, small objects).
    LowLatencyInteractive,
    /// Low latency, nobody waiting (control, signalling).
    LowLatencyNonInteractive,
    /// A steady rate (media streams).
    ConstantRateStreaming,
    /// As much capacity as the path has (bulk transfers).
    CapacitySeeking,
}

impl CapacityProfile {
    /// The Socket Intents category a profile stands for, when the
    /// application gave a profile but no category (the mapping of
    /// `shared/notes/intents-and-multipath.md`). `Default`: none.
    pub fn category(self) -> Option<Category> {
        match self {
            Self::Default => None,
            Self::Scavenger | Self::CapacitySeeking => Some(Category::BulkTransfer),
            Self::LowLatencyInteractive => Some(Category::Query),
            Self::LowLatencyNonInteractive => Some(Category::ControlTraffic),
            Self::ConstantRateStreaming => Some(Category::Stream),
        }
    }
}

/// TAPS preference levels (RFC 9622 §6.2). `Require` and `Prohibit` are
/// hard: a socket no interface satisfies is refused with
/// [`ErrorKind::NoInterface`]. `Prefer` and `Avoid` narrow the choice only
/// when something is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    /// Only interfaces that match.
    Require,
    /// Interfaces that match, if any is usable.
    Prefer,
    /// Interfaces that do not match, if any is usable.
    Avoid,
    /// Never an interface that matches.
    Prohibit,
}

/// Interface types an operator gives each managed interface in qsockd's
/// config (the `interfaceType` of RFC 9622 §6.2.11, plus `metered`, which
/// matches any interface marked metered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceType {
    /// Ethernet, DSL, fibre.
    Wired,
    /// Wi-Fi.
    Wifi,
    /// Cellular (LTE, 5G).
    Cellular,
    /// Any interface whose config says `metered = true`.
    Metered,
}

/// Which interfaces a preference is about: one by name, or all of a type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceSelector {
    /// The interface of that name (at most 15 bytes).
    Name(String),
    /// Every interface of that type.
    Type(InterfaceType),
}

/// One interface preference of a socket: a level and what it is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InterfacePreference {
    /// Require, Prefer, Avoid or Prohibit.
    pub preference: Preference,
    /// The interfaces it is about.
    pub interface: InterfaceSelector,
}

impl InterfacePreference {
    /// A preference of `level` about `interface` (`"eth0"`, or `"type:metered"`).
    /// Errors: [`ErrorKind::InvalidParams`] for a bad name or unknown type.
    pub fn new(preference: Preference, interface: &str) -> Result<Self> {
        Ok(Self { preference, interface: interface.parse()? })
    }
}

impl FromStr for InterfaceType {
    type Err = QsockError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wired" => Ok(Self::Wired),
            "wifi" => Ok(Self::Wifi),
            "cellular" => Ok(Self::Cellular),
            "metered" => Ok(Self::Metered),
            _ => Err(QsockError::new(ErrorKind::InvalidParams, format!("unknown interface type {s:?} (wired, wifi, cellular, metered)"))),
        }
    }
}

impl FromStr for InterfaceSelector {
    type Err = QsockError;
    /// `type:<wired|wifi|cellular|metered>` or an interface name.
    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix("type:") {
            Some(t) => Ok(Self::Type(t.parse()?)),
            None => {
                crate::params::check_device(s)?;
                Ok(Self::Name(s.to_string()))
            }
        }
    }
}

impl fmt::Display for InterfaceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(f, "{n}"),
            Self::Type(t) => write!(f, "type:{}", format!("{t:?}").to_lowercase()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_names_and_types() {
        assert_eq!("eth0".parse::<InterfaceSelector>().unwrap(), InterfaceSelector::Name("eth0".into()));
        assert_eq!("type:metered".parse::<InterfaceSelector>().unwrap(), InterfaceSelector::Type(InterfaceType::Metered));
        assert_eq!("type:modem".parse::<InterfaceSelector>().unwrap_err().kind, ErrorKind::InvalidParams);
        assert_eq!("a-name-longer-than-15".parse::<InterfaceSelector>().unwrap_err().kind, ErrorKind::InvalidParams);
        assert_eq!(InterfaceSelector::Type(InterfaceType::Cellular).to_string(), "type:cellular");
    }

    #[test]
    fn profiles_map_to_categories() {
        assert_eq!(CapacityProfile::CapacitySeeking.category(), Some(Category::BulkTransfer));
        assert_eq!(CapacityProfile::LowLatencyInteractive.category(), Some(Category::Query));
        assert_eq!(CapacityProfile::Default.category(), None);
    }
}
