//! `qinfo` off the send path: a thread polls the socket's figures and hands
//! the latest to the sender, which never waits on qsockd. A daemon that is
//! away (restarting) only means no new figures; the first figures after it
//! are marked, so the adaptation takes them as a new baseline instead of
//! reading the gap as congestion.
use std::{
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// One poll's figures.
#[derive(Clone, Debug)]
pub struct Polled {
    /// What qsockd reported.
    pub info: qsock::QInfo,
    /// Polls failed since the previous figures (qsockd was away or did not
    /// answer within [`qsock::client::INFO_WAIT`]): the figures span a gap.
    pub after_outage: bool,
    /// When the poll was answered.
    pub at: Instant,
}

/// A thread that reads `qinfo` of one socket every `every`.
pub struct InfoPoller {
    rx: mpsc::Receiver<Polled>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Polls that failed, count.
    failed: Arc<std::sync::atomic::AtomicU64>,
}

impl InfoPoller {
    /// Starts polling a duplicate of `sock` (same socket, so the same
    /// cookie) every `every`, each poll waiting at most
    /// [`qsock::client::INFO_WAIT`]. Errors: the descriptor cannot be
    /// duplicated, or the thread cannot be started.
    pub fn start(sock: &UdpSocket, every: Duration) -> std::io::Result<Self> {
        let dup = sock.try_clone()?;
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop2, failed2) = (stop.clone(), failed.clone());
        let thread = std::thread::Builder::new().name("qinfo-poll".into()).spawn(move || {
            let mut gap = false;
            let mut next = Instant::now();
            while !stop2.load(Ordering::Acquire) {
                match qsock::qinfo_within(&dup, qsock::client::INFO_WAIT) {
                    Ok(info) => {
                        if tx.send(Polled { info, after_outage: gap, at: Instant::now() }).is_err() {
                            return;
                        }
                        gap = false;
                    }
                    Err(_) => {
                        gap = true;
                        failed2.fetch_add(1, Ordering::Relaxed);
                    }
                }
                next += every;
                match next.checked_duration_since(Instant::now()) {
                    Some(d) => std::thread::sleep(d),
                    None => next = Instant::now(),
                }
            }
        })?;
        Ok(Self { rx, stop, thread: Some(thread), failed })
    }

    /// The newest figures since the last call, if any; `after_outage` is set
    /// if any figures in between (or a poll before them) came after a gap.
    pub fn latest(&self) -> Option<Polled> {
        let mut out: Option<Polled> = None;
        for p in self.rx.try_iter() {
            let gap = out.as_ref().is_some_and(|o| o.after_outage) || p.after_outage;
            out = Some(Polled { after_outage: gap, ..p });
        }
        out
    }

    /// Polls that failed so far (qsockd away or slow), count.
    pub fn failed_polls(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl Drop for InfoPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
