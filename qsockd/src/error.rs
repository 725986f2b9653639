//! The daemon's one error type: what the kernel-facing calls fail with
//! (tc, BPF maps, rtnetlink, the file system), a refusal already in wire
//! form, and the one conversion to the wire error clients receive.
use qsock::{ErrorKind, QsockError};

use crate::kernel::tc::TcError;

/// An error inside qsockd.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A tc request the kernel refused (the operation and its errno).
    #[error(transparent)]
    Tc(#[from] TcError),
    /// A BPF map operation failed.
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// Loading the eBPF object failed.
    #[error("eBPF object: {0}")]
    Ebpf(#[from] aya::EbpfError),
    /// An rtnetlink request failed.
    #[error("rtnetlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// A file or socket operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Something the kernel or the data path lacks, in words.
    #[error("{0}")]
    Kernel(String),
    /// A refusal in the client's terms (bad parameters, capacity, ...).
    #[error(transparent)]
    Refused(#[from] QsockError),
}

impl From<DaemonError> for QsockError {
    /// Refusals pass as they are; everything else is [`ErrorKind::Kernel`]
    /// with its message.
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::Refused(q) => q,
            other => QsockError::new(ErrorKind::Kernel, other.to_string()),
        }
    }
}

/// Result of the daemon's kernel-facing steps.
pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

/// A wire error of kind [`ErrorKind::Kernel`] from anything displayable.
pub(crate) fn kernel_err(e: impl std::fmt::Display) -> QsockError {
    QsockError::new(ErrorKind::Kernel, e.to_string())
}
