//! A client connection that subscribed to a connection's subflow events
//! ([`qsock::proto::Request::SubflowEvents`]): from then on it carries one
//! [`Response::SubflowEvent`] per event and serves nothing else; it ends
//! when the client hangs up or the MPTCP connection closes.
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::Result;
use qsock::{proto::Response, ErrorKind, QsockError, SubflowEvent};
use tokio::{io::unix::AsyncFd, sync::broadcast::error::RecvError};

use super::server::{recv_one, send_response};
use crate::multipath::{events::Subscription, Multipath};

/// Takes the subscription the request asks for. Errors:
/// [`ErrorKind::Malformed`] (not exactly one socket sent), those of
/// [`Multipath::subscribe`].
pub fn subscribe(multipath: &Multipath, mut fds: Vec<OwnedFd>) -> Result<Subscription, QsockError> {
    if fds.len() != 1 {
        return Err(QsockError::new(ErrorKind::Malformed, format!("a subscription needs exactly one socket as SCM_RIGHTS, got {}", fds.len())));
    }
    // The socket is dropped here: qsockd keeps no reference to it.
    multipath.subscribe(fds.remove(0).as_fd())
}

/// Sends the subscription's events until the client hangs up or the
/// connection closes. Errors: the client connection failed.
pub async fn pump(conn: &AsyncFd<OwnedFd>, mut sub: Subscription) -> Result<()> {
    loop {
        tokio::select! {
            got = sub.rx.recv() => {
                let ev = match got {
                    Ok((token, ev)) if token == sub.token => ev,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(count)) => SubflowEvent::Missed { count },
                    Err(RecvError::Closed) => return Ok(()),
                };
                let last = ev == SubflowEvent::ConnectionClosed;
                send_response(conn, &Response::SubflowEvent(ev)).await?;
                if last {
                    return Ok(());
                }
            }
            readable = conn.readable() => {
                let mut guard = readable?;
                match guard.try_io(|fd| recv_one(fd.as_raw_fd())) {
                    Ok(Ok(None)) | Ok(Err(_)) => return Ok(()), // the client hung up
                    Ok(Ok(Some(_))) => {
                        let refused = QsockError::new(ErrorKind::Malformed, "this connection carries subflow events only: send requests on another");
                        send_response(conn, &Response::Error(refused)).await?;
                    }
                    Err(_would_block) => {}
                }
            }
        }
    }
}
