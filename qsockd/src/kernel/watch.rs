//! rtnetlink link and address events (`ip monitor link address`): qsockd
//! notices a managed interface coming up, going down, appearing, vanishing
//! or changing addresses as it happens, without a restart.
use std::sync::Arc;

use futures::StreamExt;
use rtnetlink::MulticastGroup;
use tokio::sync::RwLock;

use crate::ops::Registry;

/// Listens for link and address events and refreshes the managed
/// interfaces on each burst of them. Returns only if the netlink socket
/// cannot be opened or closes. Errors: opening the multicast socket failed.
pub async fn watch_links(registry: Arc<RwLock<Registry>>) -> std::io::Result<()> {
    let (conn, _handle, mut events) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr])?;
    tokio::spawn(conn);
    while events.next().await.is_some() {
        // One refresh reads the whole state: fold a burst into it.
        while events.try_recv().is_ok() {}
        registry.write().await.refresh_interfaces(qsock::monotonic_now_ns()).await;
    }
    Ok(())
}
