#!/usr/bin/env bash
# Installs the prerequisites for building and testing qsock; with --demo
# also those of the demo (iperf3, ffmpeg). Idempotent: each step checks
# before it acts. Run as root on Debian 12.
set -euo pipefail

demo=0
[ "${1:-}" = "--demo" ] && demo=1

log() { printf '[setup] %s\n' "$*"; }

# System packages: iproute2 (ip, tc) and util-linux (setpriv) always;
# iperf3 (perturbation), ffmpeg (H.264 input), a font for the plots, and for
# the Socket Intents bed nginx (the web server), curl (the client) and
# ethtool (offloads off around the delay line), for the demo, the tests
# and the experiments.
pkgs=(iproute2 util-linux)
[ "$demo" = 1 ] && pkgs+=(iperf3 ffmpeg fonts-dejavu-core nginx curl ethtool)
need_pkgs=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "apt-get install ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages must not start their services (nginx would take port 80 of
  # the host): the test beds start their own, in namespaces.
  rc_policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$rc_policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$rc_policy"; chmod +x "$rc_policy"; own_policy=1; fi
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  [ "$own_policy" = 1 ] && rm -f "$rc_policy"
fi

export PATH="$HOME/.cargo/bin:$PATH"

# Rust: nightly with rust-src builds the eBPF crate (-Z build-std=core).
# rustfmt and clippy for the style gates of scripts/test.sh.
for c in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$c"; then
    log "rustup component add $c"
    rustup component add "$c"
  fi
done
if ! rustup toolchain list | grep -q '^nightly'; then
  log "rustup toolchain install nightly"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "rustup component add rust-src (nightly)"
  rustup component add rust-src --toolchain nightly
fi

# bpf-linker must link the same LLVM major as nightly rustc; link it against
# the LLVM shared library that ships in the nightly sysroot.
if ! bpf-linker --version >/dev/null 2>&1; then
  sysroot=$(rustc +nightly --print sysroot)
  libllvm=$(ls "$sysroot"/lib/libLLVM.so.* 2>/dev/null | head -n 1)
  [ -n "$libllvm" ] || { echo "no libLLVM in $sysroot/lib" >&2; exit 1; }
  major=$(basename "$libllvm" | sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/')
  prefix=$(mktemp -d)
  mkdir -p "$prefix/lib"
  ln -sf "$libllvm" "$prefix/lib/libLLVM.so"
  log "cargo install bpf-linker (llvm-$major, from $libllvm)"
  LLVM_PREFIX="$prefix" RUSTFLAGS="-C link-args=-Wl,-rpath,$sysroot/lib" \
    cargo install bpf-linker --locked --no-default-features --features "llvm-$major"
fi

log "ok"
