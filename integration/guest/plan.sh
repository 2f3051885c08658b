#!/usr/bin/env bash
# Prints the guest lane's plan ("name<TAB>command" lines, run in the guest in the workspace): which
# test binaries run there, with which filters and cgroup driver. Builds the test binaries first.
set -euo pipefail
cd "$(dirname "$0")/../.."

declare -A exe
while IFS=$'\t' read -r name path; do
  exe[$name]=$path
done < <(cargo test --workspace --no-run --message-format=json -q 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] != ["bin"]:
        package = m["package_id"].split("#")[0].rstrip("/").split("/")[-1]
        print(package + "/" + m["target"]["name"] + "\t" + m["executable"])
')

step() { printf '%s\t%s\n' "$1" "$2"; }
# The runtime's root tests under the cgroupfs driver; those about cgroups again under systemd's (of
# the CLI and escape tests, those whose cgroup the driver makes or uses: the others take the same
# path under both).
for suite in cgroups namespaces process rootfs hooks_and_exec cli escapes checkpoint; do
  step "runtime-$suite" "${exe[runtime/$suite]} --test-threads 2"
done
for suite in cgroups checkpoint; do
  step "runtime-$suite-systemd" "MYSHIM_TEST_CGROUP_DRIVER=systemd ${exe[runtime/$suite]} --test-threads 2"
done
step "runtime-cli-systemd" "MYSHIM_TEST_CGROUP_DRIVER=systemd ${exe[runtime/cli]} create_start_state_pause_kill_delete events update_takes bad_specs --test-threads 2"
step "runtime-escapes-systemd" "MYSHIM_TEST_CGROUP_DRIVER=systemd ${exe[runtime/escapes]} a_cgroup_in_use hugetlb_page_sizes update_is_all_or_nothing --test-threads 2"
step "runtime-unit" "${exe[runtime/myshim_runtime]}"
# Through containerd 2.1 (the version whose CRI gives systemd cgroups paths to pods in slices): end
# to end, the task API, CRI pods, checkpoint/restore, and containerd restarting around running
# containers; each under the cgroupfs driver and again under systemd's (scopes in system.slice, pods
# in kubepods-style slices).
for driver in cgroupfs systemd; do
  env="MYSHIM_TEST_CGROUP_DRIVER=$driver"
  step "e2e-$driver" "$env ${exe[integration/end_to_end]} containerd_2_1:: --test-threads 2"
  step "task-api-$driver" "$env ${exe[integration/task_api]} containerd_2_1:: --test-threads 2"
  # Without the churn of 100 pods: minutes under emulation, and the host runs it.
  step "cri-$driver" "$env ${exe[integration/cri]} containerd_2_1:: --skip churn --test-threads 1"
  step "cri-checkpoint-$driver" "$env ${exe[integration/cri]} checkpoint_container --test-threads 1"
  step "checkpoint-$driver" "$env ${exe[integration/checkpoint]} containerd_2_1:: --test-threads 2"
done
step "faults-systemd" "MYSHIM_TEST_CGROUP_DRIVER=systemd ${exe[integration/faults]} containerd_2_1_sig --test-threads 1"
# Ratios against runc in the same guest, with the shim an operator installs (the static release
# build, when it is there: the benchmark builds it).
release=target/x86_64-unknown-linux-gnu/release
bin_dir=$PWD/target/debug
[ -x "$release/containerd-shim-myshim-v1" ] && bin_dir=$PWD/$release
step "report-ratios" "MYSHIM_BIN_DIR=$bin_dir $PWD/target/debug/guest-ratios"
