#!/usr/bin/env bash
# Installs qsock system-wide: release binaries to /usr/local/sbin (qsockd,
# qsockctl) and /usr/local/bin (qsock-run, and libqsock_preload.so next to
# it, where qsock-run looks), a config skeleton in /etc/qsock/qsockd.toml (kept if
# present) and the systemd units qsockd-init.service (qsockd init
# --configured at boot) and qsockd.service (qsockd run, restarted on
# failure), enabled when systemd runs. Run as root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/install.sh must run as root" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p qsockd -p qsock-preload
install -m 0755 target/release/qsockd target/release/qsockctl /usr/local/sbin/
install -m 0755 target/release/qsock-run /usr/local/bin/
install -m 0644 target/release/libqsock_preload.so /usr/local/bin/libqsock_preload.so
install -d /etc/qsock
[ -e /etc/qsock/qsockd.toml ] || install -m 0644 dist/qsockd.toml /etc/qsock/qsockd.toml
install -m 0644 dist/systemd/qsockd-init.service dist/systemd/qsockd.service /etc/systemd/system/
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now qsockd-init.service qsockd.service
  echo "qsock installed; edit /etc/qsock/qsockd.toml and: systemctl restart qsockd-init qsockd"
else
  echo "qsock installed (systemd is not running here: units copied, not enabled)"
fi
