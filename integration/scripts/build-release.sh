#!/usr/bin/env bash
# The release build: static binaries (glibc and libseccomp linked in) of the shim, myshim-runc and the
# integration tools, in target/x86_64-unknown-linux-gnu/release/.
#
# Static binaries start faster (no dynamic loading), which the shim pays for every container and exec
# it starts, and a node needs one file. The binary is linked with lld in the order of
# shim/hot-functions.txt: the functions a shim daemon runs come first, packed together, so the daemon
# touches (and keeps resident) a fraction of its text instead of pages scattered over all of it.
# Names no longer in the binary are skipped; integration/scripts/hot-functions.sh refreshes the list.
set -euo pipefail
cd "$(dirname "$0")/../.."
gcc_ld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld"
order="${MYSHIM_HOT_FUNCTIONS:-$PWD/shim/hot-functions.txt}"
export RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-B$gcc_ld -C link-arg=-fuse-ld=lld -C link-arg=-Wl,--symbol-ordering-file=$order -C link-arg=-Wl,--no-warn-symbol-ordering -C link-arg=-Wl,-z,pack-relative-relocs"
export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu
# An explicit --target keeps build scripts and proc macros dynamic (crt-static would break them).
cargo build --release --quiet --target x86_64-unknown-linux-gnu -p myshim-shim -p myshim-runtime -p myshim-integration --bins
