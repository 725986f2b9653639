//! 100,000 attach/close cycles from two clients at once leave nothing
//! behind: no class serving a socket, no entry in the data path's maps, no
//! record in qsockd's books, and the link's reservations back at zero.
//! The cycles mix the rate scheduler (own classes, parked and reused),
//! EDF and DWCS (shared classes), and `qchange`.
use std::{net::UdpSocket, os::fd::AsFd, path::Path};

use qsock::{Client, DwcsAttrs, EdfAttrs, QosParams, SchedulerParams};
use qsock_common::{SocketCounters, SocketPolicy, MAP_COUNTERS, MAP_POLICIES};
use qsock_tests::Bed;

const CYCLES_PER_CLIENT: u32 = 50_000;

/// Entries of the pinned hash map `name` in pin directory `dir`.
fn entries<V: aya::Pod>(dir: &Path, name: &str) -> usize {
    let map = aya::maps::Map::HashMap(aya::maps::MapData::from_pin(dir.join(name)).unwrap());
    let m: aya::maps::HashMap<_, u64, V> = aya::maps::HashMap::try_from(map).unwrap();
    m.keys().count()
}

fn params(b: &Bed, i: u32) -> QosParams {
    match i % 10 {
        3 => QosParams { scheduler: SchedulerParams::Edf(EdfAttrs { lossy: true, message_bytes: 1000, min_interval_ns: 10_000_000 }), ..b.rate(1) },
        7 => QosParams {
            scheduler: SchedulerParams::Dwcs(DwcsAttrs { ipg_ns: 10_000_000, unit_bytes: 1000, oln: 1, old: 4, non_droppable: false }),
            ..b.rate(1)
        },
        _ => b.rate(100_000 + (i % 5) as u64 * 10_000),
    }
}

#[test]
fn a_hundred_thousand_attach_close_cycles_leave_nothing_behind() {
    if qsock_tests::skip_unless_root() {
        return;
    }
    let b = Bed::new("churn", "1gbit").unwrap();
    let idle = b.bed.tc_server(&["class", "show", "dev", &b.bed.server_dev]).unwrap();
    std::thread::scope(|s| {
        for t in 0..2 {
            let b = &b;
            s.spawn(move || {
                let client = Client::connect(&b.bed.socket_path()).unwrap();
                let sock = || b.bed.in_ns(&b.bed.server_ns, || UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap();
                for i in 0..CYCLES_PER_CLIENT {
                    let s = sock();
                    client.attach(s.as_fd(), &params(b, i + t)).unwrap_or_else(|e| panic!("cycle {i} of client {t}: {e}"));
                    if i % 100 == 0 {
                        client.change(s.as_fd(), &b.rate(150_000)).unwrap();
                    }
                    client.detach(s.as_fd()).unwrap();
                }
            });
        }
    });
    assert!(b.client.list().unwrap().is_empty(), "no socket still managed");
    let classes = b.bed.tc_server(&["class", "show", "dev", &b.bed.server_dev]).unwrap();
    let serving: Vec<&str> = classes.lines().filter(|l| l.starts_with("class htb 1:") && !idle.contains(*l) && !l.contains(" rate 8Kbit ")).collect();
    assert!(serving.is_empty(), "classes left serving nobody: {serving:?}");
    let best_effort = |dump: &str| dump.lines().find(|l| l.starts_with("class htb 1:fffe ")).map(|l| l.split(" burst").next().unwrap().to_string());
    assert_eq!(best_effort(&classes), best_effort(&idle), "best effort has the whole link back");
    let pins = b.bed.pin_dir().unwrap();
    assert_eq!(entries::<SocketPolicy>(&pins, MAP_POLICIES), 0, "policy map empty");
    assert_eq!(entries::<SocketCounters>(&pins, MAP_COUNTERS), 0, "counter map empty");
    // qsockd's books: <state_root>/net<inode>/sockets/, one record per managed socket.
    let books_dir = b.bed.state_root.join(pins.parent().unwrap().file_name().unwrap()).join("sockets");
    let books = std::fs::read_dir(&books_dir).unwrap_or_else(|e| panic!("{}: {e}", books_dir.display())).count();
    assert_eq!(books, 0, "no socket record left in qsockd's books");
}
