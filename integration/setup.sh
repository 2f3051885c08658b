#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for myshim and runs the demo:
#   - Debian packages: busybox-static (the test image), runc (the peer for comparison), CNI plugins,
#     build tools (gcc builds the escape tests' static helper), patchelf, matplotlib and perf (the
#     benchmarks: crun 1.21 with its own glibc, the chart, the link order);
#   - the nightly toolchain and cargo-fuzz (for shim/fuzz);
#   - containerd 1.6, 1.7 and 2.1 side by side under /opt/myshim (system apt configuration untouched);
#   - CRIU 4.2 (checkpoint/restore) under /opt/myshim, with the libraries it takes from the system;
#   - Docker Engine 28 (sid's docker.io, docker-cli, tini-static) unpacked under /opt/myshim, and
#     Podman 4.3 from Debian (the client suites);
#   - qemu and mmdebstrap, and the guest lane's Debian 12 image (systemd, cgroup v2 only), cached;
#   - builds the workspace and the busybox image;
#   - runs a container through myshim on a private containerd of each version.
# Idempotent: a second run only rebuilds what changed. Run as root from the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (it installs packages and starts containerd)" >&2
  exit 1
fi

packages=(busybox-static runc crun containernetworking-plugins libseccomp-dev pkg-config iproute2 python3 util-linux gcc libc6-dev
  patchelf python3-matplotlib linux-perf qemu-system-x86 mmdebstrap e2fsprogs
  libnet1 libnftables1 libnl-3-200 libprotobuf-c1 libgnutls30 libbsd0 iptables podman)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

# Debian's qemu-system-x86 replaces a backported qemu-utils: bring qemu-img back (the guest lane's
# copy-on-write overlay).
if ! command -v qemu-img >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils
fi

echo "== fuzzing tools (nightly toolchain, cargo-fuzz)"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet

echo "== containerd 1.6, 1.7, 2.1; crun 1.21 (benchmarks); CRIU 4.2; Docker Engine 28"
integration/scripts/fetch-containerd.sh
integration/scripts/fetch-crun.sh
integration/scripts/fetch-criu.sh
integration/scripts/fetch-docker.sh

echo "== the guest lane's Debian 12 image (systemd, cgroup v2 only; cached)"
integration/guest/build-image.sh >/dev/null

echo "== building"
cargo build --workspace --bins --quiet

echo "== demo"
cargo run --quiet -p myshim-integration --bin demo
