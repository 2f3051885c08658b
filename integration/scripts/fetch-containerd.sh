#!/usr/bin/env bash
# Fetches containerd 1.6 (bookworm), 1.7 (trixie) and 2.1 (sid) from Debian and unpacks each into its own
# folder under $MYSHIM_OPT/containerd/<major.minor>/, side by side, without touching the system's apt
# configuration: a private sources list, lists and cache directory are passed to apt on the command line.
set -euo pipefail

opt=${MYSHIM_OPT:-/opt/myshim}
work="$opt/apt"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/sourceparts" "$work/debs"

fetch() { # <major.minor> <suite>
  local want=$1 suite=$2 dest="$opt/containerd/$1"
  if [ -x "$dest/usr/bin/containerd" ]; then
    echo "containerd $want: already in $dest"
    return
  fi
  local sources="$work/sources-$suite.list"
  echo "deb http://deb.debian.org/debian $suite main" >"$sources"
  local aptopts=(-o "Dir::Etc::sourcelist=$sources" -o "Dir::Etc::sourceparts=$work/sourceparts"
    -o "Dir::State::Lists=$work/lists-$suite" -o "Dir::Cache=$work/cache"
    -o "Dir::Etc::preferencesparts=$work/sourceparts" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
  mkdir -p "$work/lists-$suite/partial"
  apt-get "${aptopts[@]}" -qq update
  # Pin by major.minor, not by Debian revision: sid moves.
  local version
  version=$(apt-cache "${aptopts[@]}" madison containerd | awk -v w="$want" '
    { v=$3; sub(/^[0-9]+:/, "", v); if (index(v, w ".") == 1) { print $3; exit } }')
  if [ -z "$version" ]; then
    echo "containerd $want: no version $want.* in Debian $suite" >&2
    exit 1
  fi
  (cd "$work/debs" && apt-get "${aptopts[@]}" -qq download "containerd=$version")
  local deb
  deb=$(ls -t "$work/debs"/containerd_"${version#*:}"_*.deb | head -n1)
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  dpkg -x "$deb" "$dest.tmp"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  echo "containerd $want: $version from $suite in $dest"
}

fetch 1.6 bookworm
fetch 1.7 trixie
fetch 2.1 sid
