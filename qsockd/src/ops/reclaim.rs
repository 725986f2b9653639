//! `Reclaim`: a client that reconnected after a restart claims its sockets again.

use qsock::{AttachInfo, ErrorKind, QsockError};

use super::{Peer, Registry};
use crate::{device::runtime::DeviceRt, kernel::tc::fmt_classid, state::sockinfo::SocketFacts};

impl Registry {
    /// Re-registers a socket with the client connection `peer` after a
    /// restart (the library does it when it reconnects): from now on the
    /// socket is released when that connection closes. Only its owner (or
    /// root) may claim it. Errors: [`ErrorKind::NotManaged`],
    /// [`ErrorKind::PermissionDenied`].
    pub fn reclaim(&mut self, facts: &SocketFacts, peer: Peer) -> Result<AttachInfo, QsockError> {
        if self.connections.contains_key(&facts.cookie) {
            return self.reclaim_connection(facts.cookie, peer);
        }
        let m = self.managed(facts.cookie)?;
        if m.owner_uid != peer.uid && peer.uid != 0 {
            return Err(QsockError::new(ErrorKind::PermissionDenied, format!("the socket belongs to uid {}", m.owner_uid)));
        }
        self.sockets.update(facts.cookie, |m| {
            m.conn = peer.conn;
            m.owner_pid = peer.pid;
        });
        let m = self.managed(facts.cookie)?;
        Ok(AttachInfo {
            cookie: facts.cookie,
            device: m.device.clone(),
            classid: fmt_classid(DeviceRt::classid(m.minor)),
            warning: None,
            selection: m.selection.clone(),
        })
    }

    /// [`Registry::reclaim`] of an MPTCP socket whose connection qsockd
    /// manages: the connection and each of its subflow streams now belong to
    /// `peer`'s client connection. The answer names the first managed
    /// subflow's device and class. Errors: [`ErrorKind::PermissionDenied`].
    fn reclaim_connection(&mut self, app: u64, peer: Peer) -> Result<AttachInfo, QsockError> {
        let conn = self.connections.get_mut(&app).expect("caller checked");
        if conn.owner.uid != peer.uid && peer.uid != 0 {
            return Err(QsockError::new(ErrorKind::PermissionDenied, format!("the connection belongs to uid {}", conn.owner.uid)));
        }
        conn.owner.conn = peer.conn;
        conn.owner.pid = peer.pid;
        let streams: Vec<u64> = conn.subflows.values().filter(|s| s.managed.is_ok()).map(|s| s.cookie).collect();
        for &c in &streams {
            self.sockets.update(c, |m| {
                m.conn = peer.conn;
                m.owner_pid = peer.pid;
            });
        }
        self.record_connection(app);
        let first = streams.iter().find_map(|&c| self.sockets.get(c));
        Ok(AttachInfo {
            cookie: app,
            device: first.map(|m| m.device.clone()).unwrap_or_default(),
            classid: first.map(|m| fmt_classid(DeviceRt::classid(m.minor))).unwrap_or_default(),
            warning: None,
            selection: None,
        })
    }
}
