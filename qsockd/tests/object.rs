//! The built eBPF object against what qsockd and `qsock-common` assume, without
//! root and without loading anything: every map qsockd opens exists under
//! its name with the key and value sizes of the shared `#[repr(C)]` types, is
//! pinned by name, and both programs are in the sections qsockd attaches.
use aya_obj::{maps::PinningType, Object, ProgramSection};
use qsock_common::*;

fn object() -> Object {
    Object::parse(qsockd::EBPF_OBJECT).expect("the embedded eBPF object parses")
}

#[test]
fn every_map_has_the_name_sizes_and_pinning_qsockd_assumes() {
    let obj = object();
    let expect: [(&str, usize, usize, u32); 4] = [
        (MAP_POLICIES, size_of::<u64>(), size_of::<SocketPolicy>(), MAX_SOCKETS),
        (MAP_COUNTERS, size_of::<u64>(), size_of::<SocketCounters>(), MAX_SOCKETS),
        (MAP_SHARED_CLOCKS, size_of::<u32>(), size_of::<SharedClock>(), MAX_SHARED_CLASSES),
        (MAP_OFFSETS, size_of::<u32>(), size_of::<KernelOffsets>(), 1),
    ];
    for (name, key, value, entries) in expect {
        let m = obj.maps.get(name).unwrap_or_else(|| panic!("map {name} missing; the object has {:?}", obj.maps.keys().collect::<Vec<_>>()));
        assert_eq!(m.key_size() as usize, key, "{name}: key size");
        assert_eq!(m.value_size() as usize, value, "{name}: value size (the eBPF and host builds of qsock-common disagree?)");
        assert_eq!(m.max_entries(), entries, "{name}: entries");
        assert_eq!(m.pinning(), PinningType::ByName, "{name}: pinned by name, so it outlives a daemon restart");
    }
    let mut names: Vec<&String> = obj.maps.keys().filter(|n| !n.starts_with('.')).collect();
    names.sort();
    assert_eq!(names, [MAP_COUNTERS, MAP_OFFSETS, MAP_POLICIES, MAP_SHARED_CLOCKS], "no map qsockd does not know");
}

#[test]
fn both_programs_are_where_qsockd_attaches_them() {
    let obj = object();
    let egress = obj.programs.get(PROG_EGRESS).expect("egress classifier");
    assert!(matches!(egress.section, ProgramSection::SchedClassifier), "{:?}", egress.section);
    let dequeue = obj.programs.get(PROG_DEQUEUE).expect("dequeue probe");
    assert!(matches!(dequeue.section, ProgramSection::BtfTracePoint), "{:?}", dequeue.section);
    assert_eq!(egress.license.to_str().unwrap(), "GPL", "BTF tracepoints and bpf_probe_read_kernel need a GPL program");
}

#[test]
fn shared_types_have_the_layout_both_sides_assume() {
    // Sizes fixed by the fields (all u64/u32, no padding the two targets could
    // disagree on): a change here is a change of the pinned maps' format.
    assert_eq!(size_of::<SharedClock>(), 24);
    assert_eq!(size_of::<SocketPolicy>() % 8, 0);
    assert_eq!(size_of::<SocketCounters>() % 8, 0);
    assert_eq!(align_of::<SocketCounters>(), 8);
}
