#!/usr/bin/env bash
# Fetches Docker Engine 28 (Debian sid's docker.io and docker-cli) and tini-static (`docker run
# --init`) for the Docker suite, unpacked under $MYSHIM_OPT/docker with the private apt configuration
# of fetch-containerd.sh: nothing is installed system-wide, and the tests start dockerd themselves
# against their private containerd instances. The binaries need only bookworm's glibc. Result:
# $MYSHIM_OPT/docker/bin/{dockerd,docker,docker-proxy,docker-init}.
set -euo pipefail

opt=${MYSHIM_OPT:-/opt/myshim}
dest="$opt/docker"
if [ -x "$dest/bin/dockerd" ] && [ -x "$dest/bin/docker" ] && [ -x "$dest/bin/docker-init" ]; then
  echo "docker: already in $dest"
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
docker_version=""
for line in 28 27 26; do
  docker_version=$(version_of docker.io "$line.")
  [ -n "$docker_version" ] && break
done
cli_version=$(version_of docker-cli "${docker_version%%+*}")
tini_version=$(version_of tini-static 0.)
if [ -z "$docker_version" ] || [ -z "$cli_version" ] || [ -z "$tini_version" ]; then
  echo "docker: docker.io 26-28, docker-cli or tini-static not found in Debian $suite" >&2
  exit 1
fi
(cd "$work/debs" && apt-get "${aptopts[@]}" -qq download "docker.io=$docker_version" "docker-cli=$cli_version" "tini-static=$tini_version")

rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/bin" "$dest.tmp/root"
for package in "docker.io_${docker_version#*:}" "docker-cli_${cli_version#*:}" "tini-static_${tini_version#*:}"; do
  dpkg -x "$(ls -t "$work/debs/$package"_*.deb | head -n1)" "$dest.tmp/root"
done
for binary in usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/docker; do
  [ -x "$dest.tmp/root/$binary" ] || binary=${binary/sbin/bin}
  cp "$dest.tmp/root/$binary" "$dest.tmp/bin/"
done
cp "$dest.tmp/root/usr/bin/tini-static" "$dest.tmp/bin/docker-init"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
"$dest/bin/dockerd" --version
"$dest/bin/docker" --version
echo "docker: $docker_version (cli $cli_version, tini $tini_version) in $dest"
