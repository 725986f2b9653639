#!/usr/bin/env bash
# The multipath experiments of issue 16 on the issue's bed (dsl: 6 Mbit/s
# down, 10 ms RTT; lte: 12 Mbit/s, 70 ms; a stock-Linux MPTCP server, nginx
# made MPTCP by the preload shim), each beside the kernel's own path manager
# or plain TCP in the same run:
#   handover         stall after dsl goes down / is blackholed; back on dsl
#   aggregate        one bulk download over both links vs the sum alone
#   delayed_subflow  130-object page, second subflow only for large objects
#   deadline_subflow 1 MB chunks due in 1.2 s, lte only when behind
#   refresh          a new subflow every 64 KiB of a 2 MB file (one run)
# -> results/<experiment>.csv (bench, variant, metric, unit, rep, value) and
#    results/<experiment>-<metric>.svg (a box per variant); each prints its
#    medians and ranges. About 15 minutes on 2 vCPUs; repetitions from
#    HANDOVER_REPS, AGGREGATE_REPS, DELAYED_REPS, DEADLINE_REPS.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/multipath.sh must run as root (namespaces, tc, BPF, MPTCP)" >&2; exit 1; }
bash scripts/setup.sh --demo
export PATH="$HOME/.cargo/bin:$PATH"
# The daemon, the bed's helpers and the preload library qsock-run loads.
cargo build --release -p qsockd -p testbed -p qsock-preload
export QSOCK_RESULTS="$PWD/results"
for bench in handover aggregate delayed_subflow deadline_subflow; do
  echo "== $bench =="
  cargo bench -p qsock-tests --bench "$bench"
done
echo "== refresh =="
cargo test --release -p qsock-tests --test refresh -- --nocapture
