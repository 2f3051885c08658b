#!/usr/bin/env bash
# Fetches crun 1.21 (Debian trixie) for the benchmarks, with the C library it needs: bookworm's crun
# 1.8.1 rejects the OCI spec version containerd 1.7/2.x write, and trixie's crun needs glibc 2.38. The
# binary is patched to load trixie's glibc from its own folder; everything else (libseccomp, libcap,
# libyajl, libsystemd) comes from the system. Result: $MYSHIM_OPT/crun/bin/crun. Uses the private apt
# configuration of fetch-containerd.sh.
set -euo pipefail

opt=${MYSHIM_OPT:-/opt/myshim}
dest="$opt/crun"
if [ -x "$dest/bin/crun" ]; then
  echo "crun: already in $dest"
  exit 0
fi
work="$opt/apt"
suite=trixie
sources="$work/sources-$suite.list"
mkdir -p "$work/lists-$suite/partial" "$work/cache/archives/partial" "$work/sourceparts" "$work/debs"
echo "deb http://deb.debian.org/debian $suite main" >"$sources"
aptopts=(-o "Dir::Etc::sourcelist=$sources" -o "Dir::Etc::sourceparts=$work/sourceparts"
  -o "Dir::State::Lists=$work/lists-$suite" -o "Dir::Cache=$work/cache"
  -o "Dir::Etc::preferencesparts=$work/sourceparts" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
apt-get "${aptopts[@]}" -qq update

version_of() { # <package> <major.minor prefix>
  apt-cache "${aptopts[@]}" madison "$1" | awk -v w="$2" '{ v=$3; sub(/^[0-9]+:/, "", v); if (index(v, w) == 1) { print $3; exit } }'
}
crun_version=$(version_of crun 1.21)
libc_version=$(version_of libc6 2.)
if [ -z "$crun_version" ] || [ -z "$libc_version" ]; then
  echo "crun: crun 1.21 or libc6 not found in Debian $suite" >&2
  exit 1
fi
(cd "$work/debs" && apt-get "${aptopts[@]}" -qq download "crun=$crun_version" "libc6=$libc_version")

rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/bin" "$dest.tmp/root"
dpkg -x "$(ls -t "$work/debs"/crun_"${crun_version#*:}"_*.deb | head -n1)" "$dest.tmp/root"
dpkg -x "$(ls -t "$work/debs"/libc6_"${libc_version#*:}"_*.deb | head -n1)" "$dest.tmp/root"
libdir="$dest/root/usr/lib/x86_64-linux-gnu"
cp "$dest.tmp/root/usr/bin/crun" "$dest.tmp/bin/crun"
patchelf --set-interpreter "$libdir/ld-linux-x86-64.so.2" --set-rpath "$libdir" "$dest.tmp/bin/crun"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
"$dest/bin/crun" --version | head -n1
echo "crun: $crun_version with libc6 $libc_version in $dest"
