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
}
