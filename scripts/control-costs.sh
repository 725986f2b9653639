#!/usr/bin/env bash
# Reproduces the two kernel/file-system figures behind qsockd's design for
# 10,000 sockets (README, "Control-plane cost"; docs/architecture.md,
# "Restart and flat cost"), root:
#  1. HTB class add / change / delete with 10,000 classes in the qdisc
#     (tc -batch, 100 of each, in a namespace made and removed here);
#  2. one small record written and renamed into place (qsockd's books),
#     on tmpfs (/dev/shm) and in the state directory's file system.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "scripts/control-costs.sh must run as root (namespaces, tc)" >&2; exit 1; }
command -v tc >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; }
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }
ns="qs-costs-$$"
work=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT
ip netns add "$ns"
ip -n "$ns" link add qa type veth peer name qb
ip -n "$ns" link set qa up
tc -n "$ns" qdisc add dev qa root handle 1: htb default fffe
tc -n "$ns" class add dev qa parent 1: classid 1:1 htb rate 10gbit
cls() { printf "class %s dev qa parent 1:1 classid 1:%x htb rate %s ceil 10gbit\n" "$1" "$2" "$3"; }
for i in $(seq 16 10015); do cls add "$i" 100kbit; done > "$work/fill"
for i in $(seq 10016 10115); do cls add "$i" 100kbit; done > "$work/add"
for i in $(seq 16 115); do cls change "$i" 200kbit; done > "$work/change"
for i in $(seq 16 115); do printf "class del dev qa classid 1:%x\n" "$i"; done > "$work/del"
per_op() { local t0 t1; t0=$(date +%s%N); tc -n "$ns" -batch "$1" 2>/dev/null; t1=$(date +%s%N); echo "$(( (t1 - t0) / 100000 )) µs"; }
t0=$(date +%s%N); tc -n "$ns" -batch "$work/fill" 2>/dev/null; t1=$(date +%s%N)
echo "creating 10,000 classes: $(( (t1 - t0) / 1000000 )) ms"
echo "with 10,000 classes, per class: add $(per_op "$work/add"), change $(per_op "$work/change"), delete $(per_op "$work/del")"
python3 - "${1:-/run/qsock/state}" <<'PY'
import os, sys, time, json, tempfile
for base in ["/dev/shm", sys.argv[1]]:
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(dir=base)
    t = time.perf_counter()
    for i in range(2000):
        with open(f"{d}/{i}.tmp", "w") as f:
            f.write(json.dumps({"cookie": i, "device": "eth0", "minor": 16}))
        os.rename(f"{d}/{i}.tmp", f"{d}/{i}.json")
    us = (time.perf_counter() - t) / 2000 * 1e6
    os.system(f"rm -rf {d}")
    print(f"one record written and renamed in {base}: {us:.0f} µs")
PY
