//! tc over rtnetlink: the root HTB qdisc, its classes, clsact, and class
//! statistics. The HTB options themselves are encoded in [`crate::kernel::htb`].
use std::collections::HashMap;

use rtnetlink::{
    packet_core::{DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST},
    packet_route::{
        tc::{TcAttribute, TcHandle, TcMessage, TcOption, TcStats2},
        RouteNetlinkMessage,
    },
    Handle,
};
use serde::{Deserialize, Serialize};

use crate::kernel::htb::{self, HtbClass};

/// `TC_H_ROOT`: parent of a root qdisc.
const TC_H_ROOT: u32 = 0xffff_ffff;
/// `TC_H_CLSACT`: parent of the clsact qdisc.
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// `TCA_OPTIONS` in `enum TCA_*` (linux/rtnetlink.h).
const TCA_OPTIONS: u16 = 2;

/// A failed tc operation: what was attempted and the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct TcError {
    /// The operation, e.g. "add HTB class 1:10 on ifindex 3".
    pub op: String,
    /// The underlying error (an errno for kernel refusals).
    pub source: std::io::Error,
}

impl TcError {
    /// The kernel's errno, if the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

type Result<T> = std::result::Result<T, TcError>;

/// The root qdisc found on a device, kept so teardown can restore it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedQdisc {
    /// Qdisc kind, e.g. `"tbf"`.
    pub kind: String,
    /// Handle (`major << 16 | minor`).
    pub handle: u32,
    /// Payload of `TCA_OPTIONS`, as the kernel dumped it.
    pub options: Vec<u8>,
}

impl SavedQdisc {
    /// Whether the kernel made this qdisc by default (nothing to restore:
    /// deleting the root brings the default back).
    pub fn is_default(&self) -> bool {
        self.handle == 0 || matches!(self.kind.as_str(), "noqueue" | "pfifo_fast" | "mq")
    }
}

/// Byte and queue counters of one HTB class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Bytes dequeued from the class.
    pub bytes: u64,
    /// Packets dequeued from the class.
    pub packets: u64,
    /// Packets dropped by the class's leaf qdisc.
    pub drops: u64,
    /// Packets queued now.
    pub qlen: u64,
    /// Bytes queued now.
    pub backlog: u64,
}

/// tc requests on one network namespace's rtnetlink socket.
#[derive(Clone)]
pub struct Tc {
    handle: Handle,
}

fn tc_message(ifindex: u32, handle: u32, parent: u32, kind: Option<&str>, options: Vec<TcOption>) -> TcMessage {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.handle = TcHandle::from(handle);
    m.header.parent = TcHandle::from(parent);
    if let Some(k) = kind {
        m.attributes.push(TcAttribute::Kind(k.to_string()));
    }
    if !options.is_empty() {
        m.attributes.push(TcAttribute::Options(options));
    }
    m
}

/// The payload of `TCA_OPTIONS`. For kinds it does not know, rtnetlink keeps
/// the whole attribute as one opaque NLA whose value is that payload.
fn raw_options(attr: &TcAttribute, opts: &[TcOption]) -> Vec<u8> {
    match opts {
        [o @ TcOption::Other(_)] if o.kind() & 0x3fff == TCA_OPTIONS => nla_value(o),
        _ => nla_value(attr),
    }
}

/// The payload bytes of one netlink attribute.
fn nla_value(n: &impl Nla) -> Vec<u8> {
    let mut buf = vec![0u8; n.value_len()];
    n.emit_value(&mut buf);
    buf
}

/// Formats a classid as tc prints it, e.g. `1:10` (hex minor).
pub fn fmt_classid(id: u32) -> String {
    format!("{:x}:{:x}", id >> 16, id & 0xffff)
}

impl Tc {
    /// Opens an rtnetlink socket in the current network namespace; the
    /// connection task runs on the current tokio runtime.
    pub fn new() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The rtnetlink handle, for requests beyond tc (links, routes, rules).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Sends one request and waits for its ACK.
    async fn ack(&self, op: String, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(|e| TcError { op: op.clone(), source: std::io::Error::other(e.to_string()) })?;
        use futures::StreamExt;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                if e.code.is_some() {
                    return Err(TcError { op, source: e.to_io() });
                }
            }
        }
        Ok(())
    }

    async fn dump(&self, op: &str, msg: RouteNetlinkMessage) -> Result<Vec<TcMessage>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut handle = self.handle.clone();
        let err = |e: String| TcError { op: op.to_string(), source: std::io::Error::other(e) };
        let mut resp = handle.request(req).map_err(|e| err(e.to_string()))?;
        let mut out = Vec::new();
        use futures::StreamExt;
        while let Some(m) = resp.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewQueueDiscipline(t))
                | NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficClass(t)) => out.push(t),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(TcError { op: op.to_string(), source: e.to_io() }),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Qdiscs of `ifindex`.
    async fn qdiscs(&self, ifindex: u32) -> Result<Vec<TcMessage>> {
        let all = self.dump("list qdiscs", RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default())).await?;
        Ok(all.into_iter().filter(|q| q.header.index == ifindex as i32).collect())
    }

    /// The root qdisc of `ifindex`, if the kernel reports one.
    pub async fn root_qdisc(&self, ifindex: u32) -> Result<Option<SavedQdisc>> {
        for q in self.qdiscs(ifindex).await? {
            if u32::from(q.header.parent) != TC_H_ROOT {
                continue;
            }
            let mut kind = String::new();
            let mut options = Vec::new();
            for a in &q.attributes {
                match a {
                    TcAttribute::Kind(k) => kind = k.clone(),
                    TcAttribute::Options(opts) => options = raw_options(a, opts),
                    _ => {}
                }
            }
            return Ok(Some(SavedQdisc { kind, handle: u32::from(q.header.handle), options }));
        }
        Ok(None)
    }

    /// Whether a clsact qdisc is present on `ifindex`.
    pub async fn has_clsact(&self, ifindex: u32) -> Result<bool> {
        Ok(self.qdiscs(ifindex).await?.iter().any(|q| q.attributes.iter().any(|a| matches!(a, TcAttribute::Kind(k) if k == "clsact"))))
    }

    /// Adds a root HTB `major:` whose unclassified traffic goes to `major:default_minor`.
    pub async fn add_htb_root(&self, ifindex: u32, major: u32, default_minor: u32) -> Result<()> {
        let msg = tc_message(ifindex, major << 16, TC_H_ROOT, Some("htb"), htb::root_options(default_minor));
        self.ack(format!("add root htb on ifindex {ifindex}"), RouteNetlinkMessage::NewQueueDiscipline(msg), NLM_F_CREATE | NLM_F_EXCL).await
    }

    /// Re-creates a saved root qdisc (teardown after `--replace`).
    pub async fn restore_root(&self, ifindex: u32, q: &SavedQdisc) -> Result<()> {
        let mut msg = tc_message(ifindex, q.handle, TC_H_ROOT, Some(&q.kind), vec![]);
        if !q.options.is_empty() {
            msg.attributes.push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, q.options.clone())));
        }
        self.ack(format!("restore root {} on ifindex {ifindex}", q.kind), RouteNetlinkMessage::NewQueueDiscipline(msg), NLM_F_CREATE | NLM_F_EXCL).await
    }

    /// Deletes the root qdisc of `ifindex`; the kernel puts its default back.
    pub async fn delete_root(&self, ifindex: u32) -> Result<()> {
        let msg = tc_message(ifindex, 0, TC_H_ROOT, None, vec![]);
        self.ack(format!("delete root qdisc on ifindex {ifindex}"), RouteNetlinkMessage::DelQueueDiscipline(msg), 0).await
    }

    /// Deletes the clsact qdisc (and every filter on it) of `ifindex`.
    pub async fn delete_clsact(&self, ifindex: u32) -> Result<()> {
        let msg = tc_message(ifindex, 0xffff_0000, TC_H_CLSACT, Some("clsact"), vec![]);
        self.ack(format!("delete clsact on ifindex {ifindex}"), RouteNetlinkMessage::DelQueueDiscipline(msg), 0).await
    }

    /// Creates (`create`) or changes HTB class `classid` under `parent`.
    pub async fn set_htb_class(&self, ifindex: u32, classid: u32, parent: u32, class: &HtbClass, create: bool) -> Result<()> {
        let msg = tc_message(ifindex, classid, parent, Some("htb"), class.options());
        let flags = if create { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
        let verb = if create { "add" } else { "change" };
        self.ack(format!("{verb} htb class {} on ifindex {ifindex}", fmt_classid(classid)), RouteNetlinkMessage::NewTrafficClass(msg), flags).await
    }

    /// Deletes HTB class `classid` (its queued packets are dropped by the kernel).
    pub async fn delete_class(&self, ifindex: u32, classid: u32) -> Result<()> {
        let msg = tc_message(ifindex, classid, 0, None, vec![]);
        self.ack(format!("delete class {} on ifindex {ifindex}", fmt_classid(classid)), RouteNetlinkMessage::DelTrafficClass(msg), 0).await
    }

    /// Counters of every class on `ifindex`, keyed by classid (one dump:
    /// its cost grows with the number of classes).
    pub async fn class_stats(&self, ifindex: u32) -> Result<HashMap<u32, ClassStats>> {
        let mut m = TcMessage::default();
        m.header.index = ifindex as i32;
        let classes = self.dump("list classes", RouteNetlinkMessage::GetTrafficClass(m)).await?;
        Ok(classes.iter().map(|c| (u32::from(c.header.handle), stats_of(c))).collect())
    }

    /// Counters of class `classid` on `ifindex` alone (`RTM_GETTCLASS`
    /// without a dump: constant cost however many classes there are);
    /// `None` if there is no such class.
    pub async fn class_stats_of(&self, ifindex: u32, classid: u32) -> Result<Option<ClassStats>> {
        let msg = tc_message(ifindex, classid, 0, None, vec![]);
        let op = format!("get class {} on ifindex {ifindex}", fmt_classid(classid));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficClass(msg));
        // The kernel answers a single get only with NLM_F_ECHO (rtnetlink_send); without it the class goes to multicast listeners alone.
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO;
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(|e| TcError { op: op.clone(), source: std::io::Error::other(e.to_string()) })?;
        let mut out = None;
        use futures::StreamExt;
        while let Some(m) = resp.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficClass(t)) => out = Some(stats_of(&t)),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    let err = TcError { op, source: e.to_io() };
                    return if err.errno() == Some(libc::ENOENT) { Ok(None) } else { Err(err) };
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// The counters in a class message's `TCA_STATS2`.
fn stats_of(c: &TcMessage) -> ClassStats {
    let mut s = ClassStats::default();
    for a in &c.attributes {
        if let TcAttribute::Stats2(st) = a {
            for x in st {
                match x {
                    TcStats2::Basic(b) => {
                        s.bytes = b.bytes;
                        s.packets = b.packets as u64;
                    }
                    TcStats2::Queue(q) => {
                        s.drops = q.drops as u64;
                        s.qlen = q.qlen as u64;
                        s.backlog = q.backlog as u64;
                    }
                    _ => {}
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classid_prints_like_tc() {
        assert_eq!(fmt_classid(0x0001_0010), "1:10");
        assert_eq!(fmt_classid(0x0001_fffe), "1:fffe");
    }
}
