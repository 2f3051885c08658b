#!/usr/bin/env bash
# Builds and installs the binaries the benchmark measures: the static, link-ordered release build of
# containerd-shim-myshim-v1 and myshim-runc (integration/scripts/build-release.sh), into PREFIX/bin
# (default /usr/local/bin, on containerd's PATH). Checks that what it installed is static (no program
# interpreter, nothing loaded at start) before saying so. Run as root from the repository:
#   integration/scripts/install.sh [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=${1:-/usr/local}
integration/scripts/build-release.sh
release=target/x86_64-unknown-linux-gnu/release
install -d "$prefix/bin"
for binary in containerd-shim-myshim-v1 myshim-runc; do
  # Installed beside and renamed into place: a shim daemon running the old file keeps it.
  install -m 0755 "$release/$binary" "$prefix/bin/.$binary.new"
  mv -f "$prefix/bin/.$binary.new" "$prefix/bin/$binary"
  if readelf --program-headers --wide "$prefix/bin/$binary" | grep -q INTERP; then
    echo "install: $prefix/bin/$binary is dynamically linked (not the measured build)" >&2
    exit 1
  fi
  echo "installed $prefix/bin/$binary ($(stat -c %s "$prefix/bin/$binary") bytes, static)"
done
