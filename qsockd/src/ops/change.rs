//! `qchange`: on the same device an own class is changed in place (or the
//! stream moves to another class); to another device the move is admitted
//! on the target first, so a refusal changes nothing.
use std::os::fd::BorrowedFd;

use qsock::{AttachInfo, ErrorKind, QosParams, QsockError};
use qsock_sched::StreamClass;

use super::{Peer, Registry};
use crate::{
    device::runtime::{drain, place, policy_of, rebalance, DeviceRt},
    error::DaemonError,
    kernel::tc::fmt_classid,
    state::sockets::Booking,
    state::sockinfo::SocketFacts,
};

impl Registry {
    /// `qchange`: new parameters or another scheduler. On the same device the
    /// packets already queued stay: an own class is changed in place, or
    /// left to drain when the stream moves to another class. Without a
    /// device the socket keeps the one it has (a socket is not moved to
    /// another interface once placed: its source address is bound).
    pub async fn change(&mut self, facts: &SocketFacts, sock: BorrowedFd<'_>, mut params: QosParams) -> Result<AttachInfo, QsockError> {
        params.validate()?;
        let m = self.managed(facts.cookie)?;
        let selection = m.selection.clone();
        match (&params.device, &selection) {
            (None, _) => params.device = Some(m.device.clone()),
            (Some(d), Some(s)) if *d != s.interface => {
                return Err(QsockError::new(
                    ErrorKind::SocketInUse,
                    format!("the socket was placed on {} and bound to {}; it cannot move to {d}", s.interface, s.source),
                ))
            }
            _ => {}
        }
        let old_params = m.params.clone();
        let (owner, minor, own_class, old) = (Peer { uid: m.owner_uid, gid: m.owner_gid, pid: m.owner_pid, conn: m.conn }, m.minor, m.own_class, m.booking);
        let (old_name, new_name) = (old_params.scheduler.name(), params.scheduler.name());
        if params.device.as_deref() != Some(m.device.as_str()) {
            return self.move_to_device(facts, sock, owner, old_params, params).await;
        }
        let tc = self.tc.clone();
        let device_name = params.device.clone().expect("set above");
        let limit = self.limits.for_peer(owner.uid, owner.gid);
        let held_others = self.sockets.held_bps(owner.uid, &device_name) - old.rate_bps;
        let dev = self.devices.get_mut(&device_name).expect("managed sockets have open devices");
        let link = dev.link(facts.sock_type, old);
        let plan = if old_name == new_name {
            dev.module(new_name)?.change(facts.cookie, &params.scheduler, &link)?
        } else {
            let plan = dev.module(new_name)?.add(facts.cookie, &params.scheduler, &link)?;
            dev.module(old_name)?.remove(facts.cookie);
            plan
        };
        let new = Booking::of(&plan);
        dev.reservations.rebook(old, new);
        let grew = new.rate_bps > old.rate_bps;
        let reuse = if own_class && matches!(plan.class, StreamClass::Own { .. }) { Some(minor) } else { None };
        let applied = async {
            if grew {
                limit.check_rate(owner.uid, &device_name, held_others, new.rate_bps, dev.state.guaranteeable_bps())?;
            }
            if grew {
                rebalance(&tc, dev, true).await?;
            }
            let new_minor = place(&tc, dev, &plan, reuse).await?;
            dev.policies.insert(facts.cookie, policy_of(&plan, new_minor, link.msg_tags), 0).map_err(DaemonError::from)?;
            if own_class && new_minor != minor {
                // Its reservation moved with the stream; the old class drains what it holds.
                dev.draining.push((minor, 0));
            }
            if !grew {
                rebalance(&tc, dev, false).await?;
            }
            Ok::<u32, QsockError>(new_minor)
        }
        .await;
        match applied {
            Ok(new_minor) => {
                let _ = drain(&tc, dev).await;
                let own = reuse.is_some() || matches!(plan.class, StreamClass::Own { .. });
                self.sockets.update(facts.cookie, |m| (m.params, m.minor, m.own_class, m.booking, m.class) = (params, new_minor, own, new, plan.class));
                self.record(facts.cookie);
                if let Some(w) = &plan.warning {
                    log::warn!("socket {}: {w}", facts.cookie);
                }
                Ok(AttachInfo {
                    cookie: facts.cookie,
                    device: device_name,
                    classid: fmt_classid(DeviceRt::classid(new_minor)),
                    warning: plan.warning,
                    selection,
                })
            }
            Err(e) => {
                // Put the modules and reservations back as they were.
                let old_link = dev.link(facts.sock_type, new);
                if old_name != new_name {
                    dev.module(new_name)?.remove(facts.cookie);
                }
                if let Err(e2) = dev.module(old_name)?.change(facts.cookie, &old_params.scheduler, &old_link) {
                    log::error!("{}: restoring socket {} after a failed change: {e2}", dev.state.device, facts.cookie);
                }
                dev.reservations.rebook(new, old);
                let _ = rebalance(&tc, dev, true).await;
                Err(e)
            }
        }
    }

    /// `qchange` to another device. Admission first, with no kernel call:
    /// the target's scheduler module plans the stream (and forgets it
    /// again) and the owner's per-user limit on the target is checked, so
    /// a refusal leaves the socket exactly as it was (class, policy,
    /// counters, reservation). Then the socket is released on its device
    /// and attached on the target; if a kernel step of that attach fails,
    /// the socket is attached again with its old parameters on its old
    /// device (its counters start anew there) and the error returned.
    async fn move_to_device(
        &mut self,
        facts: &SocketFacts,
        sock: BorrowedFd<'_>,
        owner: Peer,
        old: QosParams,
        params: QosParams,
    ) -> Result<AttachInfo, QsockError> {
        let target_name = params.device.clone().expect("a move names its device");
        let limit = self.limits.for_peer(owner.uid, owner.gid);
        let held_target = self.sockets.held_bps(owner.uid, &target_name);
        let new_name = params.scheduler.name();
        let target = self.device(&target_name).await?;
        let link = target.link(facts.sock_type, Booking::default());
        let plan = target.module(new_name)?.add(facts.cookie, &params.scheduler, &link)?;
        target.module(new_name)?.remove(facts.cookie);
        limit.check_rate(owner.uid, &target_name, held_target, plan.reserved_bps, target.state.guaranteeable_bps())?;
        self.close(facts.cookie).await?;
        match self.attach(facts, sock, owner, params).await {
            Ok(a) => Ok(a),
            Err(e) => {
                if let Err(e2) = self.attach(facts, sock, owner, old).await {
                    log::error!("socket {}: the move to {target_name} failed ({e}) and restoring it failed too ({e2}); it is no longer managed", facts.cookie);
                }
                Err(e)
            }
        }
    }
}
