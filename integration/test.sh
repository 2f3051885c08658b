#!/usr/bin/env bash
# Runs every test: unit tests, the runtime's root tests, the end-to-end, fault, load, hostile-input,
# escape, checkpoint, Docker and Podman tests against private containerd 1.6, 1.7 and 2.1 instances
# (started and stopped by the tests), a short run of every fuzz target, a smoke run of the benchmark,
# and the guest lane (the suites on a systemd host with cgroup v2 only, under qemu). Run as root after
# setup.sh. Arguments go to the test binaries (a name filter, say); MYSHIM_FUZZ_SECONDS sets the
# fuzzing time per target (0 skips it); MYSHIM_GUEST_LANE=0 skips the guest lane.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root (the tests create namespaces, mounts and cgroups)" >&2
  exit 1
fi
for v in 1.6 1.7 2.1; do
  if [ ! -x "${MYSHIM_OPT:-/opt/myshim}/containerd/$v/usr/bin/containerd" ]; then
    echo "test.sh: containerd $v is missing: run integration/setup.sh first" >&2
    exit 1
  fi
done

# The end-to-end tests run the shim binary from target/debug.
cargo build --workspace --bins --quiet
cargo test --workspace --quiet -- "$@"

fuzz_seconds="${MYSHIM_FUZZ_SECONDS:-10}"
if [ "$fuzz_seconds" != 0 ]; then
  shim/fuzz/run.sh "$fuzz_seconds"
fi

# The benchmark, briefly (no thresholds, nothing written): it still has to work.
integration/bench.sh --smoke

# The guest lane: a Debian 12 guest with systemd and cgroup v2 only (MYSHIM_GUEST_LANE=0 skips it).
if [ "${MYSHIM_GUEST_LANE:-1}" != 0 ]; then
  integration/guest/run.sh
fi
