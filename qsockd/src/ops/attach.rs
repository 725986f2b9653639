//! `qattach`: admit the stream on its device (module, per-user limit), then
//! install it (reservation, class, maps), undoing what was done on a failure.
use std::os::fd::BorrowedFd;

use qsock::{AttachInfo, ErrorKind, QosParams, QsockError};
use qsock_sched::StreamClass;

use super::{Peer, Registry};
use crate::{
    device::runtime::{install, rebalance, DeviceRt},
    kernel::tc::fmt_classid,
    state::sockets::{Booking, Managed},
    state::sockinfo::{self, SocketFacts},
};

impl Registry {
    /// `qattach`: manage the socket `facts` describes with `params`. Without
    /// a device, the policy chooses one and the socket `sock` is bound to
    /// its source address once the attach succeeded. An MPTCP socket is
    /// managed through its subflows (`ops/connection.rs`).
    pub async fn attach(&mut self, facts: &SocketFacts, sock: BorrowedFd<'_>, peer: Peer, params: QosParams) -> Result<AttachInfo, QsockError> {
        params.validate()?;
        if facts.protocol == sockinfo::IPPROTO_MPTCP && self.multipath_on {
            return self.attach_connection(facts, sock, peer, params).await;
        }
        facts.check_manageable()?;
        self.attach_stream(facts, Some(sock), peer, params, None).await
    }

    /// Attaches one stream: a socket (`sock`), or a subflow of the managed
    /// MPTCP connection `parent` (no descriptor: its device is given,
    /// nothing is bound, and it is not recorded for a restart).
    pub(crate) async fn attach_stream(
        &mut self,
        facts: &SocketFacts,
        sock: Option<BorrowedFd<'_>>,
        peer: Peer,
        mut params: QosParams,
        parent: Option<u64>,
    ) -> Result<AttachInfo, QsockError> {
        if self.sockets.contains(facts.cookie) {
            return Err(QsockError::new(ErrorKind::AlreadyManaged, "the socket is already managed; use qchange"));
        }
        let limit = self.limits.for_peer(peer.uid, peer.gid);
        limit.check_sockets(peer.uid, self.sockets.count_of_uid(peer.uid))?;
        let selection = match (&params.device, sock) {
            (Some(_), _) => None,
            (None, None) => return Err(QsockError::new(ErrorKind::InvalidParams, "a stream without a descriptor needs a device")),
            (None, Some(sock)) => {
                let s = self.choose_interface(facts, sock, &params)?;
                params.device = Some(s.interface.clone());
                Some(s)
            }
        };
        let device_name = params.device.clone().expect("set above");
        let held_bps = self.sockets.held_bps(peer.uid, &device_name);
        let dev = self.device(&device_name).await?;
        let link = dev.link(facts.sock_type, Booking::default());
        let name = params.scheduler.name();
        let plan = dev.module(name)?.add(facts.cookie, &params.scheduler, &link)?;
        if let Err(e) = limit.check_rate(peer.uid, &device_name, held_bps, plan.reserved_bps, dev.state.guaranteeable_bps()) {
            dev.module(name)?.remove(facts.cookie);
            return Err(e);
        }
        let minor = match install(dev, facts.cookie, &plan, link.msg_tags).await {
            Ok(minor) => minor,
            Err(e) => {
                dev.module(name)?.remove(facts.cookie);
                if let Err(e2) = rebalance(dev, false).await {
                    log::error!("{}: restoring classes after a failed attach: {e2}", dev.state.device);
                }
                return Err(e.into());
            }
        };
        self.sockets.insert(
            facts.cookie,
            Managed {
                device: device_name.clone(),
                minor,
                own_class: matches!(plan.class, StreamClass::Own { .. }),
                booking: Booking::of(&plan),
                class: plan.class,
                params,
                sock_type: facts.sock_type,
                owner_uid: peer.uid,
                owner_gid: peer.gid,
                owner_pid: peer.pid,
                conn: peer.conn,
                samples: Default::default(),
                since_ns: qsock::monotonic_now_ns(),
                missed: 0,
                selection: selection.clone(),
                parent,
                // A bound or connected socket is in the kernel's tables: the next sweep sees it.
                held_seen: selection.is_some() || sock.is_some_and(sockinfo::is_bound),
            },
        );
        if let (Some(s), Some(sock)) = (&selection, sock) {
            // Bound only now: a refused attach leaves the socket as it was.
            if let Err(e) = sockinfo::bind_source(sock, s.source) {
                let _ = self.close(facts.cookie).await;
                return Err(e);
            }
            log::info!("socket {} on {} ({}: {})", facts.cookie, s.interface, s.policy, s.reason);
        }
        self.record(facts.cookie);
        if let Some(w) = &plan.warning {
            log::warn!("socket {}: {w}", facts.cookie);
        }
        Ok(AttachInfo { cookie: facts.cookie, device: device_name, classid: fmt_classid(DeviceRt::classid(minor)), warning: plan.warning, selection })
    }
}
