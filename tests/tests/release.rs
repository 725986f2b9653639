//! A socket closed without `qclose` is released within about a second while
//! its process (and its connection to qsockd) lives on: its class goes and
//! its reservation returns to the link (qsockd's sock_diag sweep by cookie).
//! A socket still open is never released by the sweep.
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd,
    time::{Duration, Instant},
};

use qsock::ErrorKind;
use qsock_tests::Bed;
use testbed::CLIENT_IP;

/// Polls until `f` holds (bounded: 5 s, ten sweeps).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sockets_closed_without_qclose_are_released_and_open_ones_stay() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("rel", "10mbit").unwrap();
    let (_rx, to) = b.receiver().unwrap();
    // A socket that stays open all along: the sweep must leave it.
    let keep = b.sender().unwrap();
    b.client.attach(keep.as_fd(), &b.rate(1_000_000)).unwrap();
    keep.send_to(b"x", to).unwrap();

    // UDP: 6 of the 9.5 Mbit/s guaranteeable (bound, so qsockd knows the kernel lists it), then closed.
    let udp = b.sender().unwrap();
    let a = b.client.attach(udp.as_fd(), &b.rate(6_000_000)).unwrap();
    udp.send_to(b"x", to).unwrap();
    assert_eq!(b.client.attach(b.sender().unwrap().as_fd(), &b.rate(6_000_000)).unwrap_err().kind, ErrorKind::CapacityExceeded);
    // TCP: connected and attached, open while the UDP socket is released.
    let listener = b.bed.in_ns(&b.bed.client_ns, || TcpListener::bind((CLIENT_IP, 0))).unwrap().unwrap();
    let port = listener.local_addr().unwrap().port();
    let tcp = b.bed.in_ns(&b.bed.server_ns, || TcpStream::connect(SocketAddr::new(CLIENT_IP.into(), port))).unwrap().unwrap();
    let (_peer, _) = listener.accept().unwrap(); // held open: the closed side lingers in FIN_WAIT2
    let t = b.client.attach(tcp.as_fd(), &b.rate(2_000_000)).unwrap();
    // Close the UDP socket; the client's connection to qsockd stays open.
    drop(udp);
    eventually("release of the closed UDP socket's class", || !b.class_in_use(&a.classid));
    let again = b.sender().unwrap();
    b.client.attach(again.as_fd(), &b.rate(6_000_000)).expect("its reservation went back to the link");
    b.client.detach(again.as_fd()).unwrap();
    // The sweep that released the UDP socket saw the TCP one open and kept it.
    assert!(b.class_in_use(&t.classid), "an open socket is not released");
    // Closed, the kernel keeps the TCP orphan in FIN_WAIT a while; qsock does not wait for it.
    drop(tcp);
    eventually("release of the closed TCP socket's class", || !b.class_in_use(&t.classid));

    // The socket that stayed open is still managed.
    assert!(b.client.info(keep.as_fd()).is_ok());
}
