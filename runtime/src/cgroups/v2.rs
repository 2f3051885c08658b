//! cgroup v2: controllers enabled along the path, resources written to the unified files, freezing
//! through `cgroup.freeze`, statistics, and OOM counts from `memory.events`. Every function takes
//! the group's directory, so the same code runs against a fake cgroupfs in tests.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::{write, Writes};
use crate::error::{Error, Result};

/// The controllers a v2 group offers its children (`cgroup.controllers`).
pub fn available_controllers(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default().split_whitespace().map(str::to_owned).collect()
}

/// Hands `controllers` down to the children of `dir` (those it offers; others are skipped).
pub(super) fn enable_controllers(dir: &Path, controllers: &[String]) {
    let offered = available_controllers(dir);
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for controller in controllers.iter().filter(|c| offered.contains(c)) {
        if !enabled.split_whitespace().any(|e| e == controller) {
            // A controller the kernel refuses here (threaded mode, say) just stays off.
            let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}"));
        }
    }
}

/// `cpu.shares` (v1, 2–262144) as `cpu.weight` (v2, 1–10000), the conversion runc and the kernel
/// documentation use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    // Shares outside the kernel's range are clamped into it (no overflow for any spec value).
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// `blkio.weight` (10–1000) as `io.weight` (1–10000).
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight).saturating_sub(10) * 9999) / 990
}

fn max_or(value: i64) -> String {
    if value < 0 { "max".to_owned() } else { value.to_string() }
}

/// Writes `resources` into the v2 group at `dir`. With `strict` (a pure v2 host) a resource whose
/// controller this group lacks is an error naming the field; on a hybrid host such resources belong
/// to v1 and are skipped here.
pub fn apply(dir: &Path, controllers: &[String], resources: &LinuxResources, strict: bool, writes: &mut Writes) -> Result<()> {
    let has = |c: &str| controllers.iter().any(|x| x == c);
    let need = |c: &str, field: &str| -> Result<bool> {
        match (has(c), strict) {
            (true, _) => Ok(true),
            (false, true) => Err(Error::spec(format!("linux.resources.{field}"), format!("the {c} controller is not available in {}", dir.display()))),
            (false, false) => Ok(false),
        }
    };
    if let Some(memory) = resources.memory() {
        if (memory.limit().is_some() || memory.reservation().is_some() || memory.swap().is_some()) && need("memory", "memory")? {
            if let Some(limit) = memory.limit() {
                writes.write(dir, "memory.max", &max_or(limit))?;
            }
            if let Some(reservation) = memory.reservation() {
                writes.write(dir, "memory.low", &max_or(reservation))?;
            }
            if let Some(swap) = memory.swap() {
                // OCI's swap is memory+swap; v2 limits swap alone.
                let swap_only = match (swap, memory.limit()) {
                    (s, _) if s < 0 => -1,
                    (s, Some(limit)) if limit >= 0 => (s - limit).max(0),
                    (s, _) => s,
                };
                writes.write(dir, "memory.swap.max", &max_or(swap_only))?;
            }
        }
    }
    if let Some(cpu) = resources.cpu() {
        if (cpu.shares().is_some() || cpu.quota().is_some() || cpu.period().is_some() || cpu.idle().is_some() || cpu.burst().is_some()) && need("cpu", "cpu")? {
            if let Some(shares) = cpu.shares() {
                writes.write(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let quota = cpu.quota().filter(|q| *q > 0).map_or("max".to_owned(), |q| q.to_string());
                writes.write(dir, "cpu.max", &format!("{quota} {}", cpu.period().unwrap_or(100_000)))?;
            }
            if let Some(idle) = cpu.idle() {
                writes.write(dir, "cpu.idle", &idle.to_string())?;
            }
            if let Some(burst) = cpu.burst() {
                writes.write(dir, "cpu.max.burst", &burst.to_string())?;
            }
        }
        if (cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some()) && strict {
            return Err(Error::spec("linux.resources.cpu.realtimeRuntime", "real-time bandwidth has no cgroup v2 equivalent"));
        }
        if (cpu.cpus().as_deref().is_some_and(|c| !c.is_empty()) || cpu.mems().as_deref().is_some_and(|m| !m.is_empty())) && need("cpuset", "cpu.cpus")? {
            if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                writes.write(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                writes.write(dir, "cpuset.mems", mems)?;
            }
        }
    }
    if let Some(pids) = resources.pids() {
        if need("pids", "pids")? {
            writes.write(dir, "pids.max", &if pids.limit() > 0 { pids.limit().to_string() } else { "max".to_owned() })?;
        }
    }
    if let Some(io) = resources.block_io() {
        if need("io", "blockIO")? {
            if let Some(weight) = io.weight() {
                let file = if dir.join("io.bfq.weight").exists() { "io.bfq.weight" } else { "io.weight" };
                let value = if file == "io.bfq.weight" { weight.to_string() } else { blkio_to_io_weight(weight).to_string() };
                writes.write(dir, file, &value)?;
            }
            for device in io.weight_device().iter().flatten() {
                if let Some(weight) = device.weight() {
                    writes.write(dir, "io.weight", &format!("{}:{} {}", device.major(), device.minor(), blkio_to_io_weight(weight)))?;
                }
            }
            let throttles = [
                ("rbps", io.throttle_read_bps_device()),
                ("wbps", io.throttle_write_bps_device()),
                ("riops", io.throttle_read_iops_device()),
                ("wiops", io.throttle_write_iops_device()),
            ];
            for (key, devices) in throttles {
                for device in devices.iter().flatten() {
                    writes.write(dir, "io.max", &format!("{}:{} {key}={}", device.major(), device.minor(), device.rate()))?;
                }
            }
        }
    }
    if let Some(limits) = resources.hugepage_limits().as_ref().filter(|l| !l.is_empty()) {
        if need("hugetlb", "hugepageLimits")? {
            for limit in limits {
                writes.write(dir, &format!("hugetlb.{}.max", limit.page_size()), &max_or(limit.limit()))?;
            }
        }
    }
    for (key, value) in resources.unified().iter().flatten() {
        if key.contains('/') || key.starts_with('.') || !key.contains('.') {
            return Err(Error::spec(format!("linux.resources.unified.{key}"), "not a cgroup interface file"));
        }
        writes.write(dir, key, value).map_err(|e| Error::spec(format!("linux.resources.unified.{key}"), e.to_string()))?;
    }
    if strict {
        if let Some(rules) = resources.devices() {
            super::bpf::apply_device_rules(dir, rules)?;
        }
    }
    Ok(())
}

/// Freezes or thaws the group and waits until `cgroup.events` says so.
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        // A fake cgroupfs (or a kernel without the key) has no events to wait for.
        if events.lines().any(|l| l == want) || !events.contains("frozen") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::io(format!("freeze {}", dir.display()), std::io::Error::new(std::io::ErrorKind::TimedOut, format!("cgroup.events never said {want:?}"))));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The group's count of OOM kills (`oom_kill` in `memory.events`; a parent counts its children's
/// kills too), or None when the group is gone.
pub fn oom_kills(dir: &Path) -> Option<u64> {
    let events = std::fs::read_to_string(dir.join("memory.events")).ok()?;
    Some(events.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory standing in for a v2 group, removed when dropped.
    use crate::cgroups::fake::fake_cgroup;

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    const ALL: &[&str] = &["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

    fn all() -> Vec<String> {
        ALL.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_resource_model_written_as_v2_files() {
        let dir = fake_cgroup(&[]);
        let r = resources(
            r#"{"memory":{"limit":104857600,"reservation":52428800,"swap":209715200},
                "cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0-1","mems":"0"},
                "pids":{"limit":64},
                "blockIO":{"weight":500,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]},
                "hugepageLimits":[{"pageSize":"2MB","limit":4194304}],
                "unified":{"memory.high":"90000000"}}"#,
        );
        apply(&dir, &all(), &r, true, &mut Writes::fresh()).unwrap();
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), "104857600");
        assert_eq!(read("memory.low"), "52428800");
        assert_eq!(read("memory.swap.max"), "104857600");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpuset.cpus"), "0-1");
        assert_eq!(read("pids.max"), "64");
        assert_eq!(read("io.weight"), "4950");
        assert_eq!(read("io.max"), "8:0 rbps=1048576");
        assert_eq!(read("hugetlb.2MB.max"), "4194304");
        assert_eq!(read("memory.high"), "90000000");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_controllers_and_bad_unified_keys_name_the_field() {
        let dir = fake_cgroup(&[]);
        let err = apply(&dir, &["cpu".into()], &resources(r#"{"pids":{"limit":5}}"#), true, &mut Writes::fresh()).unwrap_err().to_string();
        assert!(err.contains("linux.resources.pids") && err.contains("pids controller"), "{err}");
        // On a hybrid host the same is simply not v2's business.
        apply(&dir, &["hugetlb".into()], &resources(r#"{"pids":{"limit":5}}"#), false, &mut Writes::fresh()).unwrap();
        let err = apply(&dir, &all(), &resources(r#"{"unified":{"../escape":"1"}}"#), true, &mut Writes::fresh()).unwrap_err().to_string();
        assert!(err.contains("linux.resources.unified.../escape"), "{err}");
        let err = apply(&dir, &all(), &resources(r#"{"cpu":{"realtimeRuntime":1000}}"#), true, &mut Writes::fresh()).unwrap_err().to_string();
        assert!(err.contains("realtimeRuntime"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limits_without_a_value_are_max() {
        let dir = fake_cgroup(&[]);
        apply(&dir, &all(), &resources(r#"{"memory":{"limit":-1},"cpu":{"quota":-1,"period":50000},"pids":{"limit":0}}"#), true, &mut Writes::fresh()).unwrap();
        assert_eq!(fs::read_to_string(dir.join("memory.max")).unwrap(), "max");
        assert_eq!(fs::read_to_string(dir.join("cpu.max")).unwrap(), "max 50000");
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "max");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn freeze_and_oom_counts() {
        let dir = fake_cgroup(&[("cgroup.events", "populated 1\nfrozen 0\n"), ("memory.events", "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")]);
        // The fake kernel does not flip `frozen`, so thawing (frozen 0) returns at once.
        set_frozen(&dir, false).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "0");
        assert_eq!(oom_kills(&dir), Some(2));
        assert_eq!(oom_kills(&dir.join("gone")), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn weight_conversions_match_the_kernel_documentation() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }
}
