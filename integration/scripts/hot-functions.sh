#!/usr/bin/env bash
# Refreshes shim/hot-functions.txt, the link order of the release build: builds it, runs the benchmark
# smoke under `perf record`, and adds every function of the shim binary that a shim daemon (its main
# thread, "containerd-shim", or tokio's blocking threads, "tokio-runtime-w") ran: those whose first
# instruction fetch faulted, and those a 10 kHz CPU-clock sample found running. The samples matter:
# a fault maps the 64 KiB or so around it, so functions near one that faulted never fault themselves
# and were found a few per round. Repeats until a round adds nothing (at most ROUNDS). Run as root.
#   integration/scripts/hot-functions.sh [ROUNDS]     (default 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-3}"
list="$PWD/shim/hot-functions.txt"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
release="$PWD/target/x86_64-unknown-linux-gnu/release"
for round in $(seq 1 "$rounds"); do
  integration/scripts/build-release.sh
  # The smoke run ends by checking the shim's memory target, which a stale order may miss: what it
  # recorded until then is what counts here.
  perf record -q -a -d -e page-faults/period=1/ -e cpu-clock/freq=10000/u -o "$scratch/perf.data" -- \
    env MYSHIM_BIN_DIR="$release" "$release/bench" --smoke >/dev/null 2>&1 || true
  # Lines: comm, event, data address (with its symbol, for a fault), instruction pointer, its symbol.
  # A fault at the instruction pointer is an instruction fetch.
  perf script -i "$scratch/perf.data" -F comm,event,ip,sym,addr --no-demangle 2>/dev/null \
    | awk '$1 != "containerd-shim" && $1 != "tokio-runtime-w" { next }
           $2 ~ /^page-faults/ && $3 == $5 && $6 != "[unknown]" { print $6 }
           $2 ~ /^cpu-clock/ && $NF != "[unknown]" { print $NF }' \
    | sort -u > "$scratch/ran"
  new=$(comm -13 <(sort -u "$list") "$scratch/ran" | wc -l)
  sort -u "$list" "$scratch/ran" -o "$list"
  echo "round $round: $new functions added, $(wc -l < "$list") in the list"
  if [ "$new" = 0 ]; then break; fi
done
