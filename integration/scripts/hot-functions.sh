#!/usr/bin/env bash
# Refreshes shim/hot-functions.txt, the link order of the release build: builds it, runs the benchmark
# smoke under `perf record` of page faults, and adds every function of the shim binary whose first
# instruction fetch faulted in a shim daemon (its main thread or tokio's blocking threads). Repeats,
# since each new order exposes functions that used to share a page with hot ones. Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-3}"
list="$PWD/shim/hot-functions.txt"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
release="$PWD/target/x86_64-unknown-linux-gnu/release"
for round in $(seq 1 "$rounds"); do
  integration/scripts/build-release.sh
  perf record -q -a -e page-faults -c 1 -d -o "$scratch/faults.data" -- \
    env MYSHIM_BIN_DIR="$release" "$release/bench" --smoke >/dev/null 2>&1
  # Lines: comm, faulting address, its symbol, instruction pointer, its symbol. A fault at the
  # instruction pointer is an instruction fetch.
  perf script -i "$scratch/faults.data" -F comm,ip,sym,addr --no-demangle 2>/dev/null \
    | awk '($1 == "containerd-shim" || $1 == "tokio-rt-worker") && $2 == $4 && $5 != "[unknown]" { print $5 }' \
    | sort -u > "$scratch/faulted"
  new=$(comm -13 <(sort -u "$list") "$scratch/faulted" | wc -l)
  sort -u "$list" "$scratch/faulted" -o "$list"
  echo "round $round: $new functions added, $(wc -l < "$list") in the list"
  [ "$new" = 0 ] && break
done
