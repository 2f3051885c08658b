//! What a container's cgroup reports, in plain types per cgroup version: the shim turns them into
//! containerd's `io.containerd.cgroups.v1.Metrics` or `v2.Metrics`.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::Cgroup;

#[derive(Debug, Clone)]
pub enum Stats {
    V1(V1Stats),
    V2(V2Stats),
}

#[derive(Debug, Default, Clone)]
pub struct V1Stats {
    pub pids: Option<PidsStats>,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub blkio: Option<BlkioStats>,
}

#[derive(Debug, Default, Clone)]
pub struct PidsStats {
    pub current: u64,
    /// 0 = no limit.
    pub limit: u64,
}

/// Nanoseconds for usage; throttling from `cpu.stat`.
#[derive(Debug, Default, Clone)]
pub struct CpuStats {
    pub total: u64,
    pub kernel: u64,
    pub user: u64,
    pub per_cpu: Vec<u64>,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

#[derive(Debug, Default, Clone)]
pub struct MemoryEntry {
    pub limit: u64,
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Clone)]
pub struct MemoryStats {
    /// `memory.stat`, key by key.
    pub stat: HashMap<String, u64>,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    pub kernel_tcp: MemoryEntry,
    pub oom_kill_disable: u64,
    pub under_oom: u64,
    pub oom_kill: u64,
}

#[derive(Debug, Default, Clone)]
pub struct BlkioEntry {
    pub op: String,
    pub major: u64,
    pub minor: u64,
    pub value: u64,
}

#[derive(Debug, Default, Clone)]
pub struct BlkioStats {
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// A single number; anything else (`max` for no limit, a missing file) reads as 0, as containerd
/// reports it.
fn read_u64(dir: &Path, file: &str) -> u64 {
    fs::read_to_string(dir.join(file)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// `key value` lines (v1 `memory.stat`, v2 `cpu.stat`, `memory.events` …).
pub(super) fn read_pairs(dir: &Path, file: &str) -> HashMap<String, u64> {
    fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

fn memory_entry(dir: &Path, prefix: &str) -> MemoryEntry {
    MemoryEntry {
        limit: read_u64(dir, &format!("{prefix}limit_in_bytes")),
        usage: read_u64(dir, &format!("{prefix}usage_in_bytes")),
        max: read_u64(dir, &format!("{prefix}max_usage_in_bytes")),
        failcnt: read_u64(dir, &format!("{prefix}failcnt")),
    }
}

/// `major:minor op value` lines of a blkio file (the `Total` line skipped).
fn blkio_entries(dir: &Path, file: &str) -> Vec<BlkioEntry> {
    fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (device, op, value) = (parts.next()?, parts.next()?, parts.next()?);
            let (major, minor) = device.split_once(':')?;
            Some(BlkioEntry { op: op.to_owned(), major: major.parse().ok()?, minor: minor.parse().ok()?, value: value.parse().ok()? })
        })
        .collect()
}

pub fn read_v1(cgroup: &Cgroup) -> V1Stats {
    let pids = cgroup.dir_of("pids").map(|dir| PidsStats {
        current: read_u64(dir, "pids.current"),
        limit: fs::read_to_string(dir.join("pids.max")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0),
    });
    let cpu = cgroup.dir_of("cpuacct").map(|dir| {
        let throttling = cgroup.dir_of("cpu").map(|cpu| read_pairs(cpu, "cpu.stat")).unwrap_or_default();
        CpuStats {
            total: read_u64(dir, "cpuacct.usage"),
            kernel: read_u64(dir, "cpuacct.usage_sys"),
            user: read_u64(dir, "cpuacct.usage_user"),
            per_cpu: fs::read_to_string(dir.join("cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect(),
            periods: throttling.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: throttling.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: throttling.get("throttled_time").copied().unwrap_or(0),
        }
    });
    let memory = cgroup.dir_of("memory").map(|dir| {
        let oom = read_pairs(dir, "memory.oom_control");
        MemoryStats {
            stat: read_pairs(dir, "memory.stat"),
            usage: memory_entry(dir, "memory."),
            swap: memory_entry(dir, "memory.memsw."),
            kernel: memory_entry(dir, "memory.kmem."),
            kernel_tcp: memory_entry(dir, "memory.kmem.tcp."),
            oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0),
            under_oom: oom.get("under_oom").copied().unwrap_or(0),
            oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
        }
    });
    let blkio = cgroup.dir_of("blkio").map(|dir| BlkioStats {
        io_service_bytes_recursive: blkio_entries(dir, "blkio.throttle.io_service_bytes_recursive"),
        io_serviced_recursive: blkio_entries(dir, "blkio.throttle.io_serviced_recursive"),
    });
    V1Stats { pids, cpu, memory, blkio }
}

/// cgroup v2 statistics: the interface files as key/value maps (`cpu.stat`, `memory.stat`,
/// `memory.events`) and the single values containerd reports.
#[derive(Debug, Default, Clone)]
pub struct V2Stats {
    pub pids_current: u64,
    pub pids_max: u64,
    pub cpu: HashMap<String, u64>,
    pub memory: HashMap<String, u64>,
    pub memory_current: u64,
    pub memory_max: u64,
    pub swap_current: u64,
    pub swap_max: u64,
    pub memory_events: HashMap<String, u64>,
    /// `io.stat`: per device (major, minor) its `rbytes`/`wbytes`/`rios`/`wios`.
    pub io: Vec<(u64, u64, HashMap<String, u64>)>,
    /// `hugetlb.<size>.current` and `.max` per page size.
    pub hugetlb: Vec<(String, u64, u64)>,
}

pub fn read_v2(dir: &Path) -> V2Stats {
    let io = fs::read_to_string(dir.join("io.stat"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (major, minor) = parts.next()?.split_once(':')?;
            let values = parts.filter_map(|kv| kv.split_once('=')).filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?))).collect();
            Some((major.parse().ok()?, minor.parse().ok()?, values))
        })
        .collect();
    let hugetlb = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(".current")?.to_owned();
            Some((size.clone(), read_u64(dir, &name), read_u64(dir, &format!("hugetlb.{size}.max"))))
        })
        .collect();
    V2Stats {
        pids_current: read_u64(dir, "pids.current"),
        pids_max: read_u64(dir, "pids.max"),
        cpu: read_pairs(dir, "cpu.stat"),
        memory: read_pairs(dir, "memory.stat"),
        memory_current: read_u64(dir, "memory.current"),
        memory_max: read_u64(dir, "memory.max"),
        swap_current: read_u64(dir, "memory.swap.current"),
        swap_max: read_u64(dir, "memory.swap.max"),
        memory_events: read_pairs(dir, "memory.events"),
        io,
        hugetlb,
    }
}
