#!/usr/bin/env bash
# The release build: static binaries (glibc and libseccomp linked in) of the shim, myshim-runc and the
# integration tools, in target/x86_64-unknown-linux-gnu/release/. Static binaries start faster (no
# dynamic loading), which the shim pays for every container and exec it starts; they are also what a
# node needs: one file, nothing to install beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
export RUSTFLAGS="-C target-feature=+crt-static"
export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu
# An explicit --target keeps build scripts and proc macros dynamic (crt-static would break them).
cargo build --release --quiet --target x86_64-unknown-linux-gnu -p myshim-shim -p myshim-runtime -p myshim-integration --bins
