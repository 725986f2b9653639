#!/usr/bin/env bash
# Reproduces the Socket Intents experiments (Schmidt et al., CoNEXT 2013, §5)
# on a multi-homed host namespace with the paper's two links (dsl: 6 Mbit/s
# down, 10 ms RTT; lte: 12 Mbit/s down, 70 ms RTT, via a user-space delay
# line), nginx serving a page of 130 objects and a bulk file, curl placed
# by qsock-run with intents:
#   scenario 1: bulk download + page load; intents vs each interface alone
#   scenario 2: dsl at 2 Mbit/s, one connection per object with its file
#               size; filesize and earliest-completion policies vs round
#               robin vs each interface alone
# -> results/intents-scenario{1,2}.{csv,svg}, results/intents-summary.txt
# Extra arguments go to intents-experiment (e.g. --reps1 5 --reps2 3).
# About 50 minutes with the paper's 30 and 15 repetitions; about 6 with
# --reps1 3 --reps2 2.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/intents.sh must run as root (namespaces, tc, BPF)" >&2; exit 1; }
bash scripts/setup.sh --demo
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace  # bins and the preload library (qsock-run needs it)
./target/release/intents-experiment --out-dir results "$@"
