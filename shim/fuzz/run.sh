#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; CI passes a few seconds) from the
# checked-in seeds, in a scratch corpus so the checkout stays clean. A crash leaves its input in
# shim/fuzz/artifacts/<target>/ and fails the run. Needs nightly and cargo-fuzz (integration/setup.sh).
set -uo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in flags ttrpc_request spec; do
  mkdir -p "$scratch/$target" "artifacts/$target"
  cp seeds/$target/* "$scratch/$target/"
  echo "== fuzz $target for ${seconds}s"
  cargo +nightly fuzz run --fuzz-dir . "$target" "$scratch/$target" -- \
    -max_total_time="$seconds" -artifact_prefix="artifacts/$target/" -print_final_stats=1 > "$scratch/$target.log" 2>&1
  status=$?
  grep -E "^stat::(number_of_executed_units|new_units_added)|ERROR|SUMMARY|panicked" "$scratch/$target.log" || true
  if [ $status != 0 ]; then
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz $target failed (exit $status); failing inputs, if any, are in shim/fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
