//! Policy routing for the managed interfaces, installed and removed by
//! qsockd over rtnetlink: a table per interface whose default route leaves
//! through it, and a rule per source address (`from ADDR lookup TABLE`), so
//! a socket bound to an interface's address leaves through that interface
//! whatever the main table says (Socket Intents selects an interface by
//! the source address; MAM expects this routing to exist, qsockd makes it).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        route::{RouteAttribute, RouteMessage, RouteScope},
        rule::{RuleAction, RuleAttribute, RuleMessage},
    },
    Handle, IpVersion, RouteMessageBuilder,
};

/// The rules and tables qsockd owns: identified by its rule priority and
/// its table ids.
#[derive(Clone)]
pub struct Routing {
    handle: Handle,
    /// `ip rule` priority of every rule qsockd installs.
    pub priority: u32,
}

fn table_of_rule(m: &RuleMessage) -> u32 {
    m.attributes.iter().find_map(|a| if let RuleAttribute::Table(t) = a { Some(*t) } else { None }).unwrap_or(m.header.table as u32)
}

fn table_of_route(m: &RouteMessage) -> u32 {
    m.attributes.iter().find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None }).unwrap_or(m.header.table as u32)
}

impl Routing {
    /// Routing over `handle` with rules at `priority`.
    pub fn new(handle: Handle, priority: u32) -> Self {
        Self { handle, priority }
    }

    async fn rules(&self) -> Result<Vec<RuleMessage>, rtnetlink::Error> {
        let mut all: Vec<RuleMessage> = self.handle.rule().get(IpVersion::V4).execute().try_collect().await?;
        all.extend(self.handle.rule().get(IpVersion::V6).execute().try_collect::<Vec<_>>().await?);
        Ok(all)
    }

    fn ours(&self, m: &RuleMessage, tables: &[u32]) -> bool {
        let prio = m.attributes.iter().find_map(|a| if let RuleAttribute::Priority(p) = a { Some(*p) } else { None });
        prio == Some(self.priority) && tables.contains(&table_of_rule(m))
    }

    /// The rule `from addr lookup table`, added unless present.
    /// Errors: the kernel refused it (other than "exists").
    pub async fn add_rule(&self, addr: IpAddr, table: u32) -> Result<(), rtnetlink::Error> {
        let r = self.handle.rule().add().table_id(table).priority(self.priority).action(RuleAction::ToTable);
        let res = match addr {
            IpAddr::V4(a) => r.v4().source_prefix(a, 32).execute().await,
            IpAddr::V6(a) => r.v6().source_prefix(a, 128).execute().await,
        };
        match res {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            r => r,
        }
    }

    /// Removes qsockd's rules for `addr` (any of `tables`); `None`: all of
    /// them. Returns how many. Errors: the dump or a delete failed.
    pub async fn del_rules(&self, addr: Option<IpAddr>, tables: &[u32]) -> Result<usize, rtnetlink::Error> {
        let mut n = 0;
        for m in self.rules().await? {
            let src = m.attributes.iter().find_map(|a| if let RuleAttribute::Source(s) = a { Some(*s) } else { None });
            if self.ours(&m, tables) && (addr.is_none() || src == addr) {
                self.handle.rule().del(m).execute().await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Sets the default route of `table` (IPv4 and, with an IPv6 gateway
    /// or none, IPv6) through `ifindex`, via `gateway` if given, else on-link.
    /// Errors: the kernel refused the route (e.g. the gateway is not reachable yet).
    pub async fn set_table(&self, table: u32, ifindex: u32, gateway: Option<IpAddr>) -> Result<(), rtnetlink::Error> {
        let v4 = match gateway {
            Some(IpAddr::V4(gw)) => Some(RouteMessageBuilder::<Ipv4Addr>::new().table_id(table).output_interface(ifindex).gateway(gw).build()),
            None => Some(RouteMessageBuilder::<Ipv4Addr>::new().table_id(table).output_interface(ifindex).scope(RouteScope::Link).build()),
            Some(IpAddr::V6(_)) => None,
        };
        let v6 = match gateway {
            Some(IpAddr::V6(gw)) => Some(RouteMessageBuilder::<Ipv6Addr>::new().table_id(table).output_interface(ifindex).gateway(gw).build()),
            _ => None,
        };
        for m in v4.into_iter().chain(v6) {
            self.handle.route().add(m).replace().execute().await?;
        }
        Ok(())
    }

    /// Deletes every route in `tables`; returns how many. Errors: the dump or a delete failed.
    pub async fn flush_tables(&self, tables: &[u32]) -> Result<usize, rtnetlink::Error> {
        let mut n = 0;
        for probe in [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()] {
            let routes: Vec<RouteMessage> = self.handle.route().get(probe).execute().try_collect().await?;
            for m in routes.into_iter().filter(|m| tables.contains(&table_of_route(m))) {
                match self.handle.route().del(m).execute().await {
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => {}
                    r => r?,
                }
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes all of qsockd's rules and routes for `tables`. Errors: as
    /// [`Routing::del_rules`] and [`Routing::flush_tables`].
    pub async fn remove_all(&self, tables: &[u32]) -> Result<(), rtnetlink::Error> {
        self.del_rules(None, tables).await?;
        self.flush_tables(tables).await?;
        Ok(())
    }
}
