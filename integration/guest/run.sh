#!/usr/bin/env bash
# The guest test lane: boots the Debian 12 guest (systemd as PID 1, cgroup v2 only, Debian's kernel;
# see build-image.sh) under qemu with the workspace shared in, runs the plan inside, and reports.
#
#   integration/guest/run.sh [PLAN]     PLAN: a file of "name<TAB>command" lines run in the guest, in
#                                       the workspace (default: the lane's plan, see plan.sh)
#
# Leaves nothing behind: the copy-on-write overlay, the results directory and the qemu process go
# (the cached base image stays). Exits non-zero when a step failed or the guest did not finish.
set -euo pipefail
cd "$(dirname "$0")/../.."
workspace=$PWD

image=$(integration/guest/build-image.sh)
scratch=$(mktemp -d /var/tmp/myshim-lane.XXXXXX)
qemu_pid=
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -KILL "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

mkdir -p "$scratch/results"
echo "$workspace" > "$scratch/results/workspace"
if [ $# -gt 0 ]; then
  cp "$1" "$scratch/results/plan"
else
  integration/guest/plan.sh > "$scratch/results/plan"
fi
qemu-img create -q -f qcow2 -b "$image/root.img" -F raw "$scratch/overlay.qcow2"

# /dev/kvm exists on these machines but a KVM guest never runs its kernel: software emulation,
# unless MYSHIM_GUEST_ACCEL says otherwise (kvm where it works).
accel=${MYSHIM_GUEST_ACCEL:-tcg,thread=multi}
# qemu64 rather than max: without AVX and friends glibc takes plain code paths, which TCG runs
# markedly faster (a third less time for the same suites here).
cpu=${MYSHIM_GUEST_CPU:-qemu64}
[[ $accel == kvm* ]] && cpu=host
timeout_seconds=${MYSHIM_GUEST_TIMEOUT:-2400}
started=$(date +%s)
qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -smp 2 -m 4096 -nographic -no-reboot -nic none \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "console=ttyS0 root=/dev/vda rw quiet systemd.show_status=0 systemd.unified_cgroup_hierarchy=1" \
  -drive "file=$scratch/overlay.qcow2,if=virtio,format=qcow2" \
  -virtfs "local,path=$workspace,mount_tag=work,security_model=passthrough" \
  -virtfs "local,path=${MYSHIM_OPT:-/opt/myshim},mount_tag=opt,security_model=passthrough,readonly=on" \
  -virtfs "local,path=$scratch/results,mount_tag=results,security_model=passthrough" \
  > "$scratch/console.log" 2>&1 &
qemu_pid=$!
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ $(( $(date +%s) - started )) -gt "$timeout_seconds" ]; then
    echo "guest lane: the guest did not finish within ${timeout_seconds}s" >&2
    tail -40 "$scratch/console.log" >&2
    exit 1
  fi
  sleep 1
done
wait "$qemu_pid" || true
qemu_pid=
elapsed=$(( $(date +%s) - started ))

echo "== guest lane ($elapsed s): $(tr '\n' ';' < "$scratch/results/facts" 2>/dev/null)"
failed=0
while IFS=$'\t' read -r name _; do
  [ -z "$name" ] && continue
  status=$(cat "$scratch/results/$name.status" 2>/dev/null || echo missing)
  seconds=$(cat "$scratch/results/$name.seconds" 2>/dev/null || echo ?)
  summary=$( (grep -E '^test result:' "$scratch/results/$name.log" 2>/dev/null || true) | awk '{p+=$4; f+=$6} END {if (NR) printf "%d passed, %d failed", p, f}')
  printf '%-40s %-8s %5s s  %s\n' "$name" "$status" "$seconds" "$summary"
  if [ "$status" != 0 ]; then
    failed=1
    echo "--- $name ---"
    tail -60 "$scratch/results/$name.log" 2>/dev/null || tail -60 "$scratch/console.log"
  elif [[ $name == report-* ]]; then
    grep -v '^time=' "$scratch/results/$name.log" | grep '^|' || true
  fi
done < "$scratch/results/plan"
if [ -n "${MYSHIM_GUEST_KEEP:-}" ]; then
  mkdir -p "$MYSHIM_GUEST_KEEP" && cp -r "$scratch/results" "$scratch/console.log" "$MYSHIM_GUEST_KEEP/"
fi
exit $failed
