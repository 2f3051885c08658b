#!/usr/bin/env bash
# Fetches CRIU 4.2 (Debian sid) for checkpoint/restore: bookworm's criu 3.17 fails `criu check` on
# this kernel ("Unexpected rt vDSO area bounds"), and trixie's 4.1 cannot dump any TCP socket on
# kernels from 6.16 (it reads SO_PASSSEC, which those refuse for TCP sockets; fixed in CRIU 4.2). As
# for crun, the binary is patched to load sid's glibc, libcompel, libnet and libnl (newer than
# bookworm's: libnet.so.9, libnl with symbol versions) from its own folder; the other libraries
# (libnftables, libprotobuf-c, libgnutls, libbsd, libuuid) come from the system. Result:
# $MYSHIM_OPT/criu/bin/criu, checked with `criu check`. Uses the private apt configuration of
# fetch-containerd.sh.
set -euo pipefail

opt=${MYSHIM_OPT:-/opt/myshim}
dest="$opt/criu"
wanted=4.2
if [ -x "$dest/bin/criu" ] && "$dest/bin/criu" --version 2>/dev/null | grep -q "^Version: $wanted" && "$dest/bin/criu" check >/dev/null 2>&1; then
  echo "criu: already in $dest"
  exit 0
fi
work="$opt/apt"
suite=sid
sources="$work/sources-$suite.list"
mkdir -p "$work/lists-$suite/partial" "$work/cache/archives/partial" "$work/sourceparts" "$work/debs"
echo "deb http://deb.debian.org/debian $suite main" >"$sources"
aptopts=(-o "Dir::Etc::sourcelist=$sources" -o "Dir::Etc::sourceparts=$work/sourceparts"
  -o "Dir::State::Lists=$work/lists-$suite" -o "Dir::Cache=$work/cache"
  -o "Dir::Etc::preferencesparts=$work/sourceparts" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
apt-get "${aptopts[@]}" -qq update

version_of() { # <package> <version prefix>
  apt-cache "${aptopts[@]}" madison "$1" | awk -v w="$2" '{ v=$3; sub(/^[0-9]+:/, "", v); if (index(v, w) == 1) { print $3; exit } }'
}
criu_version=$(version_of criu "$wanted")
libc_version=$(version_of libc6 2.)
libnet_version=$(version_of libnet9 1.)
libnl_version=$(version_of libnl-3-200 3.)
if [ -z "$criu_version" ] || [ -z "$libc_version" ] || [ -z "$libnet_version" ] || [ -z "$libnl_version" ]; then
  echo "criu: criu $wanted, libc6, libnet9 or libnl-3-200 not found in Debian $suite" >&2
  exit 1
fi
(cd "$work/debs" && apt-get "${aptopts[@]}" -qq download "criu=$criu_version" "libcompel1=$criu_version" "libc6=$libc_version" \
  "libnet9=$libnet_version" "libnl-3-200=$libnl_version")

rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/bin" "$dest.tmp/root"
for package in "criu_${criu_version#*:}" "libcompel1_${criu_version#*:}" "libc6_${libc_version#*:}" \
  "libnet9_${libnet_version#*:}" "libnl-3-200_${libnl_version#*:}"; do
  dpkg -x "$(ls -t "$work/debs/$package"_*.deb | head -n1)" "$dest.tmp/root"
done
libdir="$dest/root/usr/lib/x86_64-linux-gnu"
cp "$dest.tmp/root/usr/sbin/criu" "$dest.tmp/bin/criu"
patchelf --set-interpreter "$libdir/ld-linux-x86-64.so.2" --set-rpath "$libdir" "$dest.tmp/bin/criu"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
"$dest/bin/criu" --version | head -n1
if ! "$dest/bin/criu" check; then
  echo "criu: \`criu check\` fails on this kernel" >&2
  exit 1
fi
echo "criu: $criu_version with libc6 $libc_version in $dest"
