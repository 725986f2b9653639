#!/usr/bin/env bash
# Reproduces the Q.Sockets experiments available so far in the namespace
# test bed: Fig. 7 (sensor deadlines: plain socket, lossless EDF, lossy EDF,
# under iperf3 from 10 s). Writes results/sensor-fig7.{csv,svg}.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/experiments.sh must run as root (namespaces, tc, BPF)" >&2; exit 1; }
bash scripts/setup.sh --demo
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --bins
./target/release/sensor-experiment --out-dir results "$@"
