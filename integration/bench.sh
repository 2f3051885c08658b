#!/usr/bin/env bash
# Benchmarks myshim against containerd's runc shim with runc and with crun on containerd 2.1, in one
# interleaved run, and writes the results table and chart into the README (docs/bench/). Takes about
# ten minutes. `--smoke` runs every measurement a few times and writes nothing (CI). Run as root after
# setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
integration/scripts/fetch-crun.sh >/dev/null
integration/scripts/fetch-docker.sh >/dev/null
integration/scripts/build-release.sh
release="$PWD/target/x86_64-unknown-linux-gnu/release"
MYSHIM_BIN_DIR="$release" "$release/bench" "$@"
