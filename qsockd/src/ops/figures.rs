//! What the registry reports: `qinfo`, `qsockctl list`, and the rate samples
//! behind them.
use std::{collections::HashMap, os::fd::BorrowedFd};

use qsock::{QInfo, QsockError};

use super::{Registry, SAMPLE_BATCH};
use crate::{device::runtime::DeviceRt, error::DaemonError, serve::report, state::sockinfo::SocketFacts};

impl Registry {
    /// `qinfo` on a managed socket; `sock` is the socket itself (for stack
    /// facts). One class lookup: its cost does not grow with the sockets.
    pub async fn info(&self, facts: &SocketFacts, sock: BorrowedFd<'_>) -> Result<QInfo, QsockError> {
        if self.connections.contains_key(&facts.cookie) {
            return self.connection_info(facts.cookie, sock).await;
        }
        self.stream_info(facts, sock).await
    }

    /// [`Registry::info`] of one stream (a socket, or a subflow).
    pub(crate) async fn stream_info(&self, facts: &SocketFacts, sock: BorrowedFd<'_>) -> Result<QInfo, QsockError> {
        let m = self.managed(facts.cookie)?;
        let dev = self.devices.get(&m.device).expect("managed sockets have open devices");
        let cls = self.tc.class_stats_of(dev.state.ifindex, DeviceRt::classid(m.minor)).await.map_err(DaemonError::from)?.unwrap_or_default();
        Ok(report::qinfo(facts.cookie, m, dev, cls, sock))
    }

    /// `List`: every managed socket for root, else the caller's own. One
    /// class dump per device, one map lookup per socket.
    pub async fn list(&self, uid: u32) -> Result<Vec<qsock::SocketSummary>, QsockError> {
        let mut stats = HashMap::new();
        for (name, dev) in &self.devices {
            stats.insert(name.clone(), self.tc.class_stats(dev.state.ifindex).await.map_err(DaemonError::from)?);
        }
        let mut out: Vec<qsock::SocketSummary> = self
            .sockets
            .iter()
            .filter(|(_, m)| uid == 0 || m.owner_uid == uid)
            .map(|(cookie, m)| {
                let dev = self.devices.get(&m.device).expect("managed sockets have open devices");
                let qdisc = stats.get(&m.device).and_then(|s| s.get(&DeviceRt::classid(m.minor))).map(|s| s.drops).unwrap_or(0);
                report::summary(cookie, m, dev, qdisc)
            })
            .collect();
        out.sort_by_key(|s| s.cookie);
        Ok(out)
    }

    /// Takes one rate sample of up to [`SAMPLE_BATCH`] managed sockets
    /// (the next ones in turn; called periodically).
    pub fn sample(&mut self, now_ns: u64) {
        let window = self.rate_window_ns;
        for cookie in self.sockets.next_batch(SAMPLE_BATCH) {
            let Some(m) = self.sockets.get(cookie) else { continue };
            let Some(dev) = self.devices.get(&m.device) else { continue };
            let Some(c) = dev.counters(cookie) else { continue };
            let bytes = if dev.delay_probe { c.deq_bytes } else { c.enq_bytes };
            let samples = self.sockets.samples_mut(cookie).expect("present above");
            samples.push_back((now_ns, bytes));
            while samples.len() > 2 && samples.front().is_some_and(|(t, _)| now_ns - t > window) {
                samples.pop_front();
            }
        }
    }
}
