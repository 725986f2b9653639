#!/usr/bin/env bash
# Runs qsock's whole test suite: unit tests and the integration tests, which
# build network namespaces, tc and BPF on the real kernel (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/test.sh must run as root (namespaces, tc, BPF)" >&2; exit 1; }
# --demo: ffmpeg and iperf3, for the real-video test (tests/tests/video.rs).
bash scripts/setup.sh --demo
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/footage.sh >/dev/null
cargo build --workspace --all-targets
# Gates: formatting (rustfmt.toml), clippy and rustdoc warnings are errors.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The data path is its own crate for bpfel-unknown-none (nightly, build-std):
# the same gates, in its own invocation (as aya-template's test.sh does).
(cd qsock-ebpf && cargo +nightly fmt --check \
  && cargo +nightly clippy --release --target bpfel-unknown-none -Z build-std=core --target-dir ../target/ebpf-clippy -- -D warnings)
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo test --workspace --no-fail-fast
