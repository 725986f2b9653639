#!/usr/bin/env bash
# The session experiments of issue 17 (qsock-session: striping above the
# transport) on the multi-homed bed, each beside its reference in the same run:
#   aggregate    ordered lossless bulk over dsl (6 Mbit/s, 10 ms RTT) and lte
#                (12 Mbit/s, 70 ms) vs each alone, naive round robin, MPTCP
#   never-worse  capacity 1:1, 2:1, 10:1 x RTT 10/10, 10/70, 10/200 ms:
#                the session vs the better link alone (plain TCP)
#   semantics    the four semantics on two links with 1 % random loss each way
#   link-dies    ordered lossless upload, one link blackholed 8 s in: bytes
#                lost (checksum), stall, goodput after
#   media        the demo's footage and scene cuts by video-server --session,
#                relayed to ffmpeg: two links each below the reservation vs a
#                plain socket on one; then a link blackholed 10 s in
#   fairness     two paths through one bottleneck beside one TCP flow
# -> results/<bench>.csv (bench, variant, metric, unit, rep, value) and
#    results/<bench>-<metric>.svg (a box per variant); each prints its medians
#    and ranges. About 50 minutes on 2 vCPUs with 3 repetitions
#    (SESSIONS_REPS, AGGREGATE_REPS; SESSIONS_ONLY=<name> runs one experiment).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/sessions.sh must run as root (namespaces, tc, BPF)" >&2; exit 1; }
bash scripts/setup.sh --demo
bash scripts/footage.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
# The daemon, the bed's delay lines and the video sender and receiver.
cargo build --release -p qsockd -p testbed -p video-server
export QSOCK_RESULTS="$PWD/results"
if [ -z "${SESSIONS_ONLY:-}" ]; then
  echo "== aggregate (sessions beside TCP and MPTCP) =="
  cargo bench -p qsock-tests --bench aggregate
fi
echo "== sessions =="
cargo bench -p qsock-tests --bench sessions
