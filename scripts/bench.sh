#!/usr/bin/env bash
# Control-plane cost at 10 / 1,000 / 10,000 managed sockets (tests/benches/scale.rs)
# and the per-call cost (tests/benches/api.rs), against the daemon built from
# this tree (root).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/bench.sh must run as root (namespaces, tc, BPF)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p qsockd -p testbed
cargo bench -p qsock-tests --bench scale
# Per-call cost beside plain sockets, with the eBPF programs' own cost per run.
cargo bench -p qsock-tests --bench api
# qsendto against sendto paired (ABBA rounds), so the VM's drift cancels.
cargo bench -p qsock-tests --bench send_ratio
# Handover after a link goes down: qsockd's path manager beside the kernel's.
cargo bench -p qsock-tests --bench handover
cargo bench -p qsock-tests --bench aggregate
cargo bench -p qsock-tests --bench delayed_subflow
cargo bench -p qsock-tests --bench deadline_subflow
