//! Resource limits and freezing on cgroup v1 hierarchies.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::{write, Cgroup, Writes};
use crate::error::{Context, Error, Result};

/// Device rules every container gets after its spec's (runc grants the same): creating any device
/// node (access is what the rules decide), the standard character devices and pseudo-terminals. As
/// (type, major, minor, access), `None` meaning any.
pub(crate) const ALWAYS_ALLOWED_DEVICES: &[(char, Option<u32>, Option<u32>, &str)] = &[
    ('c', None, None, "m"),
    ('b', None, None, "m"),
    ('c', Some(1), Some(3), "rwm"),    // null
    ('c', Some(1), Some(5), "rwm"),    // zero
    ('c', Some(1), Some(7), "rwm"),    // full
    ('c', Some(1), Some(8), "rwm"),    // random
    ('c', Some(1), Some(9), "rwm"),    // urandom
    ('c', Some(5), Some(0), "rwm"),    // tty
    ('c', Some(5), Some(1), "rwm"),    // console
    ('c', Some(5), Some(2), "rwm"),    // ptmx
    ('c', Some(136), None, "rwm"),     // pts
    ('c', Some(10), Some(200), "rwm"), // net/tun
];

/// A new cpuset group starts with empty `cpus`/`mems`, which refuses every process: copy the parent's.
pub(super) fn inherit_cpuset(dir: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = fs::read_to_string(dir.join(file)).context(|| format!("read {}", dir.join(file).display()))?;
        if own.trim().is_empty() {
            let inherited = fs::read_to_string(parent.join(file))
                .context(|| format!("read {}", parent.join(file).display()))?;
            write(dir, file, inherited.trim())?;
        }
    }
    Ok(())
}

/// Applies the spec's resources to the container's v1 groups.
pub(super) fn apply(cgroup: &Cgroup, resources: &LinuxResources, writes: &mut Writes) -> Result<()> {
    if let (Some(dir), Some(memory)) = (cgroup.dir_of("memory"), resources.memory()) {
        let swap_file = "memory.memsw.limit_in_bytes";
        match (memory.limit(), memory.swap().filter(|_| dir.join(swap_file).exists())) {
            (Some(limit), Some(swap)) => {
                // The kernel keeps memory <= memory+swap at every step: when the limits grow, memsw
                // goes first.
                let current: i64 = fs::read_to_string(dir.join("memory.limit_in_bytes")).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                if swap < 0 || current < swap {
                    writes.write(dir, swap_file, &swap.to_string())?;
                    writes.write(dir, "memory.limit_in_bytes", &limit.to_string())?;
                } else {
                    writes.write(dir, "memory.limit_in_bytes", &limit.to_string())?;
                    writes.write(dir, swap_file, &swap.to_string())?;
                }
            }
            (Some(limit), None) => writes.write(dir, "memory.limit_in_bytes", &limit.to_string())?,
            (None, Some(swap)) => writes.write(dir, swap_file, &swap.to_string())?,
            (None, None) => {}
        }
        if let Some(reservation) = memory.reservation() {
            writes.write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
        }
        if let Some(swappiness) = memory.swappiness() {
            writes.write(dir, "memory.swappiness", &swappiness.to_string())?;
        }
        if memory.disable_oom_killer() == Some(true) {
            writes.write(dir, "memory.oom_control", "1")?;
        }
    }
    if let Some(cpu) = resources.cpu() {
        if let Some(dir) = cgroup.dir_of("cpu") {
            if let Some(shares) = cpu.shares() {
                writes.write(dir, "cpu.shares", &shares.to_string())?;
            }
            if let Some(period) = cpu.period() {
                writes.write(dir, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = cpu.quota() {
                writes.write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
            if let Some(runtime) = cpu.realtime_runtime() {
                writes.write(dir, "cpu.rt_runtime_us", &runtime.to_string())?;
            }
            if let Some(period) = cpu.realtime_period() {
                writes.write(dir, "cpu.rt_period_us", &period.to_string())?;
            }
            if let Some(idle) = cpu.idle() {
                writes.write(dir, "cpu.idle", &idle.to_string())?;
            }
            if let Some(burst) = cpu.burst() {
                writes.write_if_present(dir, "cpu.cfs_burst_us", &burst.to_string())?;
            }
        }
        if let Some(dir) = cgroup.dir_of("cpuset") {
            if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                writes.write(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                writes.write(dir, "cpuset.mems", mems)?;
            }
        }
    }
    if let (Some(dir), Some(io)) = (cgroup.dir_of("blkio"), resources.block_io()) {
        apply_blkio(dir, io, writes)?;
    }
    if let Some(limits) = resources.hugepage_limits() {
        // On a hybrid host hugetlb lives in the unified hierarchy (written by v2::apply).
        if let Some(dir) = cgroup.dir_of("hugetlb") {
            for limit in limits {
                writes.write(dir, &format!("hugetlb.{}.limit_in_bytes", limit.page_size()), &limit.limit().to_string())?;
            }
        }
    }
    if let (Some(dir), Some(pids)) = (cgroup.dir_of("pids"), resources.pids()) {
        let limit = if pids.limit() > 0 { pids.limit().to_string() } else { "max".to_owned() };
        writes.write(dir, "pids.max", &limit)?;
    }
    if let (Some(dir), Some(rules)) = (cgroup.dir_of("devices"), resources.devices()) {
        apply_device_rules(dir, rules, writes)?;
    }
    Ok(())
}

/// Block I/O weights and throttles. Kernels with the BFQ scheduler name the weight files `bfq.*`.
fn apply_blkio(dir: &Path, io: &oci_spec::runtime::LinuxBlockIo, writes: &mut Writes) -> Result<()> {
    let weight_file = |name: &str| if dir.join(format!("blkio.{name}")).exists() { format!("blkio.{name}") } else { format!("blkio.bfq.{name}") };
    if let Some(weight) = io.weight() {
        writes.write(dir, &weight_file("weight"), &weight.to_string())?;
    }
    if let Some(leaf) = io.leaf_weight() {
        writes.write_if_present(dir, "blkio.leaf_weight", &leaf.to_string())?;
    }
    for device in io.weight_device().iter().flatten() {
        if let Some(weight) = device.weight() {
            writes.write(dir, &weight_file("weight_device"), &format!("{}:{} {weight}", device.major(), device.minor()))?;
        }
    }
    let throttles = [
        ("blkio.throttle.read_bps_device", io.throttle_read_bps_device()),
        ("blkio.throttle.write_bps_device", io.throttle_write_bps_device()),
        ("blkio.throttle.read_iops_device", io.throttle_read_iops_device()),
        ("blkio.throttle.write_iops_device", io.throttle_write_iops_device()),
    ];
    for (file, devices) in throttles {
        for device in devices.iter().flatten() {
            writes.write(dir, file, &format!("{}:{} {}", device.major(), device.minor(), device.rate()))?;
        }
    }
    Ok(())
}

/// Writes the spec's device rules in order, then the devices every container keeps.
fn apply_device_rules(dir: &Path, rules: &[LinuxDeviceCgroup], writes: &mut Writes) -> Result<()> {
    for rule in rules {
        let file = if rule.allow() { "devices.allow" } else { "devices.deny" };
        writes.write(dir, file, &device_rule(rule))?;
    }
    for (typ, major, minor, access) in ALWAYS_ALLOWED_DEVICES {
        let number = |n: &Option<u32>| n.map_or("*".to_owned(), |n| n.to_string());
        writes.write(dir, "devices.allow", &format!("{typ} {}:{} {access}", number(major), number(minor)))?;
    }
    Ok(())
}

/// `type major:minor access`, with `*` for what the rule leaves open; a rule for all devices is `a`.
fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    let typ = rule.typ().map(|t| t.as_str().to_owned()).unwrap_or_else(|| "a".into());
    let number = |n: Option<i64>| n.map_or("*".to_owned(), |n| n.to_string());
    let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
    if typ == "a" && rule.major().is_none() && rule.minor().is_none() {
        return format!("a *:* {access}");
    }
    format!("{typ} {}:{} {access}", number(rule.major()), number(rule.minor()))
}

/// An eventfd that becomes readable whenever the memory controller of `dir` hits an OOM (and once
/// more when the group is removed): registered through `cgroup.event_control` on `memory.oom_control`.
pub fn oom_eventfd(dir: &Path) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: eventfd returns a new descriptor that we own.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(Error::io("create an eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: `efd` was just created and is owned by nobody else.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let control = fs::File::open(dir.join("memory.oom_control")).context(|| format!("open {}/memory.oom_control", dir.display()))?;
    write(dir, "cgroup.event_control", &format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()))?;
    Ok(efd)
}

/// Freezes or thaws a freezer group and waits until the kernel reports the new state.
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        write(dir, "freezer.state", want)?;
        let state = fs::read_to_string(dir.join("freezer.state")).context(|| format!("read {}/freezer.state", dir.display()))?;
        if state.trim() == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::io(
                format!("set {}/freezer.state to {want}", dir.display()),
                std::io::Error::new(std::io::ErrorKind::TimedOut, format!("still {}", state.trim())),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    #[test]
    fn device_rules_use_the_kernel_syntax() {
        let deny_all = LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap();
        assert_eq!(device_rule(&deny_all), "a *:* rwm");
        let fuse = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(device_rule(&fuse), "c 10:229 rw");
        let all_block = LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::B).build().unwrap();
        assert_eq!(device_rule(&all_block), "b *:* rwm");
    }
}
