#!/usr/bin/env bash
# Encodes the demo's real H.264 input, data/clip.h264, unless it exists:
# ffmpeg/libx264 from testsrc2 (640x360, 20 fps, 30 s, GOP 40, 2 B-frames,
# 1.2 Mbit/s). Needs ffmpeg (scripts/setup.sh --demo).
set -euo pipefail
cd "$(dirname "$0")/.."
clip=data/clip.h264
if [ ! -s "$clip" ]; then
  mkdir -p data
  echo "[clip] encoding $clip with ffmpeg/libx264 (testsrc2 640x360, 20 fps, 30 s, GOP 40, 2 B-frames)" >&2
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=640x360:rate=20" -t 30 \
    -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
    -x264-params "keyint=40:min-keyint=40:scenecut=0:bframes=2:b-adapt=0" \
    -b:v 1200k -maxrate 1500k -bufsize 1500k -f h264 "$clip"
fi
echo "$clip"
