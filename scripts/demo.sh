#!/usr/bin/env bash
# The qsock demo on real content: real camera footage and a generated
# sequence with hard scene cuts (scripts/footage.sh), each streamed as RTP
# through a 10 Mbit/s bottleneck, idle and under iperf3 -P 4, with a plain
# socket and through qsock, decoded by ffmpeg as an RTP client. Prints the
# table; writes results/video-demo.{csv,json}. About 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh must run as root (namespaces, tc, BPF)" >&2; exit 1; }
bash scripts/setup.sh --demo
export PATH="$HOME/.cargo/bin:$PATH"
mapfile -t inputs < <(bash scripts/footage.sh)
cargo build --release --workspace --bins
./target/release/video-demo --input "${inputs[@]}" --out-dir results "$@"
