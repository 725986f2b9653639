#!/usr/bin/env bash
# Runs qsock's whole test suite: unit tests and the integration tests, which
# build network namespaces, tc and BPF on the real kernel (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/test.sh must run as root (namespaces, tc, BPF)" >&2; exit 1; }
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
