#!/usr/bin/env bash
# The qsock demo on real input: a 30 s H.264 clip (libx264, I/P/B frames,
# 20 fps) streamed as RTP through a 10 Mbit/s bottleneck, once with a plain
# socket and once through qsock, under the same iperf3 perturbation.
# Prints the side-by-side table and summary; writes results/*.csv|json.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh must run as root (namespaces, tc, BPF)" >&2; exit 1; }
bash scripts/setup.sh --demo
export PATH="$HOME/.cargo/bin:$PATH"
clip=$(bash scripts/clip.sh)
cargo build --release --workspace --bins
./target/release/video-demo --input "$clip" --out-dir results "$@"
