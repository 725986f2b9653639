//! `qchange`: on the same device an own class is changed in place (or the
//! stream moves to another class); to another device the move is admitted
//! on the target first, so a refusal changes nothing.

use qsock::{AttachInfo, ErrorKind, QosParams, QsockError};
use qsock_common::SocketPolicy;
use qsock_sched::{LinkFacts, StreamClass, StreamPlan};

use super::{Peer, Registry};
use crate::{
    device::runtime::{drain, htb_class, install, park, parked_class, place, policy_of, rebalance, resize_best_effort, shrink_shared, sync_shared, DeviceRt},
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
    /// another interface once placed: its source address is bound). An
    /// MPTCP connection changes every subflow (`change_connection`).
    pub async fn change(&mut self, facts: &SocketFacts, mut params: QosParams) -> Result<AttachInfo, QsockError> {
        params.validate()?;
        if self.connections.contains_key(&facts.cookie) {
            return self.change_connection(facts.cookie, params).await;
        }
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
        let (owner, minor, own_class, old, old_class) =
            (Peer { uid: m.owner_uid, gid: m.owner_gid, pid: m.owner_pid, conn: m.conn }, m.minor, m.own_class, m.booking, m.class);
        if params.device.as_deref() != Some(m.device.as_str()) {
            return self.move_to_device(facts, owner, params).await;
        }
        let cookie = facts.cookie;
        let device_name = params.device.clone().expect("set above");
        let limit = self.limits.for_peer(owner.uid, owner.gid);
        let held_others = self.sockets.held_bps(owner.uid, &device_name) - old.rate_bps;
        let dev = self.devices.get_mut(&device_name).expect("managed sockets have open devices");

        // Admit: modules and limits, no kernel call.
        let link = dev.link(facts.sock_type, old);
        let plan = plan_change(dev, cookie, &old_params, &params, &link)?;
        let new = Booking::of(&plan);
        let grew = new.rate_bps > old.rate_bps;
        if grew {
            if let Err(e) = limit.check_rate(owner.uid, &device_name, held_others, new.rate_bps, dev.state.guaranteeable_bps()) {
                undo_plan(dev, cookie, &old_params, &params, facts.sock_type, old);
                return Err(e);
            }
        }

        // Apply, shrinking before growing so the assured rates never exceed the link.
        dev.reservations.rebook(old, new);
        let reuse = if own_class && matches!(plan.class, StreamClass::Own { .. }) { Some(minor) } else { None };
        let old_policy = dev.kernel.policy(cookie);
        let mut done = Done::default();
        let applied = async {
            // What shrinks, then best effort if the books grew, then what grows.
            if own_class && reuse.is_none() {
                // Its reservation moves with the stream: the old class keeps
                // only a parked class's rate while it drains what it holds.
                dev.kernel
                    .set_htb_class(DeviceRt::classid(minor), root_class(), parked_class(dev.state.link_rate_bps), false)
                    .await
                    .map_err(DaemonError::from)?;
                done.old_class_parked = Some(minor);
            }
            shrink_shared(dev).await?;
            if grew {
                resize_best_effort(dev).await?;
            }
            let new_minor = place(dev, &plan, reuse).await?;
            match (reuse, plan.class) {
                (Some(_), _) => done.resized_in_place = reuse,
                (None, StreamClass::Own { .. }) => done.created = Some(new_minor),
                (None, StreamClass::Shared { .. }) => {}
            }
            sync_shared(dev, false).await?;
            dev.kernel.set_policy(cookie, policy_of(&plan, new_minor, link.msg_tags))?;
            done.policy_set = true;
            if !grew {
                resize_best_effort(dev).await?;
            }
            Ok::<u32, QsockError>(new_minor)
        }
        .await;
        let new_minor = match applied {
            Ok(m) => m,
            Err(e) => {
                dev.reservations.rebook(new, old);
                undo_plan(dev, cookie, &old_params, &params, facts.sock_type, old);
                if let Err(e2) = undo_apply(dev, cookie, &done, grew, old_class, old_policy).await {
                    log::error!("{}: restoring socket {cookie} after a failed change: {e2}", dev.state.device);
                }
                return Err(e);
            }
        };
        if own_class && new_minor != minor {
            dev.draining.push((minor, 0));
            let _ = drain(dev).await;
        }
        let own = matches!(plan.class, StreamClass::Own { .. });
        self.sockets.update(cookie, |m| (m.params, m.minor, m.own_class, m.booking, m.class) = (params, new_minor, own, new, plan.class));
        self.record(cookie);
        if let Some(w) = &plan.warning {
            log::warn!("socket {cookie}: {w}");
        }
        Ok(AttachInfo { cookie, device: device_name, classid: fmt_classid(DeviceRt::classid(new_minor)), warning: plan.warning, selection })
    }

    /// `qchange` to another device, as one transaction. Admission first,
    /// with no kernel call (the target's module plans the stream, the
    /// owner's per-user limit on the target is checked), then the stream
    /// is installed on the target (reservation, class, maps: each device has
    /// its own maps, so the socket's packets still leave by its old class
    /// meanwhile); a refusal or a failed step there is undone and leaves the
    /// socket exactly as it was. Only then is it taken off its old device,
    /// whose own class drains what it holds; a kernel error there is logged
    /// (the class is retried by the sweep), the move stands.
    async fn move_to_device(&mut self, facts: &SocketFacts, owner: Peer, params: QosParams) -> Result<AttachInfo, QsockError> {
        let cookie = facts.cookie;
        let target_name = params.device.clone().expect("a move names its device");
        let limit = self.limits.for_peer(owner.uid, owner.gid);
        let held_target = self.sockets.held_bps(owner.uid, &target_name);
        let new_name = params.scheduler.name();
        let target = self.device(&target_name).await?;
        let link = target.link(facts.sock_type, Booking::default());
        let plan = target.module(new_name)?.add(cookie, &params.scheduler, &link)?;
        if let Err(e) = limit.check_rate(owner.uid, &target_name, held_target, plan.reserved_bps, target.state.guaranteeable_bps()) {
            target.module(new_name)?.remove(cookie);
            return Err(e);
        }
        let minor = match install(target, cookie, &plan, link.msg_tags).await {
            Ok(minor) => minor,
            Err(e) => {
                target.module(new_name)?.remove(cookie);
                if let Err(e2) = rebalance(target, false).await {
                    log::error!("{target_name}: restoring classes after a failed move: {e2}");
                }
                return Err(e.into());
            }
        };
        let old = self.managed(cookie)?.clone();
        if let Err(e) = self.release_on_device(cookie, &old).await {
            log::error!("socket {cookie}: moved to {target_name}, but releasing it on {}: {e}", old.device);
        }
        let own_class = matches!(plan.class, StreamClass::Own { .. });
        self.sockets.update(cookie, |m| {
            (m.device, m.minor, m.own_class, m.booking, m.class, m.params) = (target_name.clone(), minor, own_class, Booking::of(&plan), plan.class, params);
            // Its counters start anew on the target: rates from the old ones would be wrong.
            m.samples.clear();
        });
        self.record(cookie);
        if let Some(w) = &plan.warning {
            log::warn!("socket {cookie}: {w}");
        }
        Ok(AttachInfo { cookie, device: target_name, classid: fmt_classid(DeviceRt::classid(minor)), warning: plan.warning, selection: None })
    }
}

/// Kernel steps of a same-device change that were taken, for its undo.
#[derive(Default)]
struct Done {
    /// The old own class (this minor) was set to a parked class's rate.
    old_class_parked: Option<u32>,
    /// The own class (this minor) was changed in place.
    resized_in_place: Option<u32>,
    /// A new own class (this minor) was taken.
    created: Option<u32>,
    /// The policy points at the new class.
    policy_set: bool,
}

fn root_class() -> u32 {
    qsock_common::classid(qsock_common::ROOT_MAJOR, qsock_common::ROOT_CLASS_MINOR)
}

/// The stream's plan under `params`: its module changes it, or the new
/// module admits it and the old one lets it go. Errors: the module's refusal
/// (then nothing changed).
fn plan_change(dev: &mut DeviceRt, cookie: u64, old: &QosParams, params: &QosParams, link: &LinkFacts) -> Result<StreamPlan, QsockError> {
    let (old_name, new_name) = (old.scheduler.name(), params.scheduler.name());
    if old_name == new_name {
        return dev.module(new_name)?.change(cookie, &params.scheduler, link);
    }
    let plan = dev.module(new_name)?.add(cookie, &params.scheduler, link)?;
    dev.module(old_name)?.remove(cookie);
    Ok(plan)
}

/// Gives the modules back the stream as `old` had it (the undo of
/// [`plan_change`]); `held`, what the books hold for it, counts as free.
fn undo_plan(dev: &mut DeviceRt, cookie: u64, old: &QosParams, params: &QosParams, sock_type: i32, held: Booking) {
    let link = dev.link(sock_type, held);
    let (old_name, new_name) = (old.scheduler.name(), params.scheduler.name());
    let restored = if old_name == new_name {
        dev.module(old_name).and_then(|m| m.change(cookie, &old.scheduler, &link)).map(|_| ())
    } else {
        if let Ok(m) = dev.module(new_name) {
            m.remove(cookie);
        }
        dev.module(old_name).and_then(|m| m.add(cookie, &old.scheduler, &link)).map(|_| ())
    };
    if let Err(e) = restored {
        log::error!("{}: socket {cookie}'s module does not take it back: {e}", dev.state.device);
    }
}

/// Undoes the kernel steps `done` of a failed change (reservations and
/// modules are already back), shrinking before growing.
async fn undo_apply(
    dev: &mut DeviceRt,
    cookie: u64,
    done: &Done,
    grew: bool,
    old_class: StreamClass,
    old_policy: Option<SocketPolicy>,
) -> Result<(), QsockError> {
    if done.policy_set {
        if let Some(p) = old_policy {
            dev.kernel.set_policy(cookie, p)?;
        }
    }
    // The undo is a change back: what it shrinks first (the new class,
    // an own class it had grown, shared classes), best effort if the undo
    // grows the books (the change had shrunk them), then what it grows.
    if let Some(minor) = done.created {
        park(dev, minor).await.map_err(DaemonError::from)?;
    }
    let old_htb = match old_class {
        StreamClass::Own { rate_bps, ceil_bps, burst_bytes } => Some(htb_class(rate_bps, ceil_bps, burst_bytes)),
        StreamClass::Shared { .. } => None,
    };
    let in_place = done.resized_in_place.zip(old_htb);
    if let (Some((minor, htb)), true) = (in_place, grew) {
        dev.kernel.set_htb_class(DeviceRt::classid(minor), root_class(), htb, false).await.map_err(DaemonError::from)?;
    }
    shrink_shared(dev).await?;
    if !grew {
        resize_best_effort(dev).await?;
    }
    if let (Some((minor, htb)), false) = (in_place, grew) {
        dev.kernel.set_htb_class(DeviceRt::classid(minor), root_class(), htb, false).await.map_err(DaemonError::from)?;
    }
    sync_shared(dev, false).await?;
    if let (Some(minor), Some(htb)) = (done.old_class_parked, old_htb) {
        dev.kernel.set_htb_class(DeviceRt::classid(minor), root_class(), htb, false).await.map_err(DaemonError::from)?;
    }
    if grew {
        resize_best_effort(dev).await?;
    }
    Ok(())
}
