#!/usr/bin/env bash
# Reproduces the Q.Sockets experiments in the namespace test bed, each on a
# 10 Mbit/s bottleneck loaded by bulk TCP (iperf3):
#   1. Fig. 7: sensor deadlines per 5 s, plain socket vs lossless vs lossy EDF
#      (iperf3 from 10 s)                      -> results/sensor-fig7.{csv,svg}
#   2. Fig. 6: two DWCS video streams (20 and 15 fps) and an unmanaged 20 fps
#      stream (iperf3 from 10 s)               -> results/video-fig6.{csv,svg}
#   3. DWCS window test: streams with x/y 1/2, 1/4, 1/8, 0/1 on a DWCS class
#      offered more than it holds, iperf3 throughout, plain sockets first
#                                              -> results/dwcs-window.{csv,svg}
#   4. qinfo-driven adaptation: real footage reserved below its mean rate,
#      the link dropping from 10 to 1.2 Mbit/s over the middle third and
#      back, with and without adaptation       -> results/video-adapt.csv
# Each prints a summary table. About 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/experiments.sh must run as root (namespaces, tc, BPF)" >&2; exit 1; }
bash scripts/setup.sh --demo
export PATH="$HOME/.cargo/bin:$PATH"
clip=$(bash scripts/clip.sh)
mapfile -t footage < <(bash scripts/footage.sh)
cargo build --release --workspace --bins
echo "== Q.Sockets Fig. 7 =="
./target/release/sensor-experiment --out-dir results
echo "== Q.Sockets Fig. 6 =="
./target/release/video-fig6 --input "$clip" --out-dir results
echo "== DWCS window test =="
./target/release/dwcs-window --out-dir results
echo "== qinfo-driven adaptation =="
./target/release/video-adapt --input "${footage[0]}" --out-dir results
