#!/bin/bash
# Runs inside the guest (started by its myshim-lane.service): executes the plan the host left in
# /results/plan, one step per line ("name<TAB>command"), each step's output in /results/<name>.log
# and its exit status in /results/<name>.status, then powers the guest off.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
# The image mounts the workspace at /work/main; the test binaries carry the host's absolute paths
# (cargo's CARGO_MANIFEST_DIR and CARGO_BIN_EXE_*), so it is bound again where the host has it.
workspace=$(cat /results/workspace 2>/dev/null || echo /work/main)
if [ "$workspace" != /work/main ]; then
  mkdir -p "$workspace" && mount --bind /work/main "$workspace"
fi
cd "$workspace"
{
  echo "kernel $(uname -r)"
  echo "init $(ps -o comm= -p 1)"
  echo "systemd $(systemctl --version | head -1)"
  echo "cgroup $(stat -f -c %T /sys/fs/cgroup)"
  echo "controllers $(cat /sys/fs/cgroup/cgroup.controllers)"
} > /results/facts
while IFS=$'\t' read -r name command; do
  [ -z "$name" ] && continue
  echo "== guest: $name" > /dev/console
  start=$(date +%s)
  # A step that hangs fails (124) instead of holding the lane until its overall timeout.
  timeout --kill-after=10 "${MYSHIM_GUEST_STEP_TIMEOUT:-900}" bash -c "$command" > "/results/$name.log" 2>&1
  echo $? > "/results/$name.status"
  echo "$(( $(date +%s) - start ))" > "/results/$name.seconds"
  echo "== guest: $name exit $(cat "/results/$name.status") in $(cat "/results/$name.seconds") s" > /dev/console
done < /results/plan
sync
systemctl poweroff
