#!/usr/bin/env bash
# Builds the guest of the test lane, or finds it already built: a Debian 12 system with systemd as
# PID 1, cgroup v2 only and Debian's own kernel, made from Debian packages with mmdebstrap into an
# ext4 image. Prints the directory holding root.img, vmlinuz and initrd.img.
#
# The image is cached under /opt/myshim/guest/<key>, the key being a hash of this script: change the
# package list or the configuration below and a new image is built (older ones are removed). The
# libraries after apparmor are CRIU's (the CRIU itself comes from the /opt/myshim share).
set -euo pipefail
script=$(readlink -f "$0")

packages=(
  systemd systemd-sysv udev dbus linux-image-amd64 kmod
  iproute2 util-linux mount procps
  python3 busybox-static runc containernetworking-plugins
  apparmor
  libnet1 libnftables1 libnl-3-200 libprotobuf-c1 libgnutls30 libbsd0 iptables
)
key=$(sha256sum < "$script" | cut -c1-16)
base="${MYSHIM_OPT:-/opt/myshim}/guest"
dir="$base/$key"
if [ -f "$dir/ready" ]; then
  echo "$dir"
  exit 0
fi

work=$(mktemp -d /var/tmp/myshim-guest-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
tree="$work/tree"
echo "== building the guest image ($key)" >&2
mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" bookworm "$tree" http://deb.debian.org/debian >&2

# The lane's shares (9p): the workspace and /opt/myshim at the paths the tests expect, and a
# directory for results. The runner comes from the workspace, so changing it needs no new image.
mkdir -p "$tree/work/main" "$tree/opt/myshim" "$tree/results"
cat > "$tree/etc/fstab" <<'FSTAB'
/dev/vda / ext4 rw,relatime 0 1
work /work/main 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
opt /opt/myshim 9p trans=virtio,version=9p2000.L,msize=262144,ro,nofail 0 0
results /results 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
FSTAB
cat > "$tree/etc/systemd/system/myshim-lane.service" <<'UNIT'
[Unit]
Description=myshim guest test lane
After=multi-user.target dbus.service remote-fs.target
Wants=dbus.service

[Service]
Type=oneshot
ExecStart=/work/main/integration/guest/inside.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/myshim-lane.service "$tree/etc/systemd/system/multi-user.target.wants/myshim-lane.service"
echo myshim-guest > "$tree/etc/hostname"
# No login prompt, no time sync or timers doing work in the background during measurements.
rm -f "$tree/etc/systemd/system/getty.target.wants/"* "$tree/etc/systemd/system/timers.target.wants/"*
ln -sf /dev/null "$tree/etc/systemd/system/serial-getty@ttyS0.service"

mkdir -p "$dir.tmp"
cp "$tree"/boot/vmlinuz-* "$dir.tmp/vmlinuz"
cp "$tree"/boot/initrd.img-* "$dir.tmp/initrd.img"
rm -rf "$tree/boot"/*
truncate -s 3G "$dir.tmp/root.img"
mke2fs -q -t ext4 -d "$tree" -L myshim-guest "$dir.tmp/root.img" >&2
# Only one image is kept.
find "$base" -mindepth 1 -maxdepth 1 ! -name "$key" ! -name "$key.tmp" -exec rm -rf {} +
rm -rf "$dir"
mv "$dir.tmp" "$dir"
touch "$dir/ready"
echo "$dir"
