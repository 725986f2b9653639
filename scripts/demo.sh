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
clip=data/clip.h264
if [ ! -s "$clip" ]; then
  mkdir -p data
  echo "[demo] encoding $clip with ffmpeg/libx264 (testsrc2 640x360, 20 fps, 30 s, GOP 40, 2 B-frames)"
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=640x360:rate=20" -t 30 \
    -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
    -x264-params "keyint=40:min-keyint=40:scenecut=0:bframes=2:b-adapt=0" \
    -b:v 1200k -maxrate 1500k -bufsize 1500k -f h264 "$clip"
fi
cargo build --release --workspace --bins
./target/release/video-demo --input "$clip" --out-dir results "$@"
