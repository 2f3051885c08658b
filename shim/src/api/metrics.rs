//! The runtime's cgroup statistics as containerd's `io.containerd.cgroups.v1.Metrics` or
//! `io.containerd.cgroups.v2.Metrics`.

use myshim_protos::io::containerd::cgroups::v1 as m;
use myshim_protos::io::containerd::cgroups::v2 as m2;
use myshim_runtime::cgroups::stats::{BlkioEntry, MemoryEntry, Stats, V1Stats, V2Stats};

/// The metrics message for the cgroup version the container runs under.
pub fn metrics(stats: &Stats) -> prost_types::Any {
    match stats {
        Stats::V1(v1) => myshim_protos::to_any(&v1_metrics(v1)),
        Stats::V2(v2) => myshim_protos::to_any(&v2_metrics(v2)),
    }
}

pub fn v2_metrics(s: &V2Stats) -> m2::Metrics {
    let mem = |key: &str| s.memory.get(key).copied().unwrap_or(0);
    let cpu = |key: &str| s.cpu.get(key).copied().unwrap_or(0);
    let event = |key: &str| s.memory_events.get(key).copied().unwrap_or(0);
    m2::Metrics {
        pids: Some(m2::PidsStat { current: s.pids_current, limit: s.pids_max }),
        cpu: Some(m2::CpuStat {
            usage_usec: cpu("usage_usec"),
            user_usec: cpu("user_usec"),
            system_usec: cpu("system_usec"),
            nr_periods: cpu("nr_periods"),
            nr_throttled: cpu("nr_throttled"),
            throttled_usec: cpu("throttled_usec"),
        }),
        memory: Some(m2::MemoryStat {
            anon: mem("anon"),
            file: mem("file"),
            kernel_stack: mem("kernel_stack"),
            slab: mem("slab"),
            sock: mem("sock"),
            shmem: mem("shmem"),
            file_mapped: mem("file_mapped"),
            file_dirty: mem("file_dirty"),
            file_writeback: mem("file_writeback"),
            anon_thp: mem("anon_thp"),
            inactive_anon: mem("inactive_anon"),
            active_anon: mem("active_anon"),
            inactive_file: mem("inactive_file"),
            active_file: mem("active_file"),
            unevictable: mem("unevictable"),
            slab_reclaimable: mem("slab_reclaimable"),
            slab_unreclaimable: mem("slab_unreclaimable"),
            pgfault: mem("pgfault"),
            pgmajfault: mem("pgmajfault"),
            workingset_refault: mem("workingset_refault"),
            workingset_activate: mem("workingset_activate"),
            workingset_nodereclaim: mem("workingset_nodereclaim"),
            pgrefill: mem("pgrefill"),
            pgscan: mem("pgscan"),
            pgsteal: mem("pgsteal"),
            pgactivate: mem("pgactivate"),
            pgdeactivate: mem("pgdeactivate"),
            pglazyfree: mem("pglazyfree"),
            pglazyfreed: mem("pglazyfreed"),
            thp_fault_alloc: mem("thp_fault_alloc"),
            thp_collapse_alloc: mem("thp_collapse_alloc"),
            usage: s.memory_current,
            usage_limit: s.memory_max,
            swap_usage: s.swap_current,
            swap_limit: s.swap_max,
            ..Default::default()
        }),
        memory_events: Some(m2::MemoryEvents { low: event("low"), high: event("high"), max: event("max"), oom: event("oom"), oom_kill: event("oom_kill") }),
        io: Some(m2::IoStat {
            usage: s
                .io
                .iter()
                .map(|(major, minor, v)| {
                    let get = |k: &str| v.get(k).copied().unwrap_or(0);
                    m2::IoEntry { major: *major, minor: *minor, rbytes: get("rbytes"), wbytes: get("wbytes"), rios: get("rios"), wios: get("wios") }
                })
                .collect(),
        }),
        hugetlb: s.hugetlb.iter().map(|(size, current, max)| m2::HugeTlbStat { current: *current, max: *max, pagesize: size.clone() }).collect(),
        ..Default::default()
    }
}

pub fn v1_metrics(stats: &V1Stats) -> m::Metrics {
    m::Metrics {
        pids: stats.pids.as_ref().map(|p| m::PidsStat { current: p.current, limit: p.limit }),
        cpu: stats.cpu.as_ref().map(|c| m::CpuStat {
            usage: Some(m::CpuUsage { total: c.total, kernel: c.kernel, user: c.user, per_cpu: c.per_cpu.clone() }),
            throttling: Some(m::Throttle { periods: c.periods, throttled_periods: c.throttled_periods, throttled_time: c.throttled_time }),
        }),
        memory: stats.memory.as_ref().map(|mem| {
            let s = |key: &str| mem.stat.get(key).copied().unwrap_or(0);
            m::MemoryStat {
                cache: s("cache"),
                rss: s("rss"),
                rss_huge: s("rss_huge"),
                mapped_file: s("mapped_file"),
                dirty: s("dirty"),
                writeback: s("writeback"),
                pg_pg_in: s("pgpgin"),
                pg_pg_out: s("pgpgout"),
                pg_fault: s("pgfault"),
                pg_maj_fault: s("pgmajfault"),
                inactive_anon: s("inactive_anon"),
                active_anon: s("active_anon"),
                inactive_file: s("inactive_file"),
                active_file: s("active_file"),
                unevictable: s("unevictable"),
                hierarchical_memory_limit: s("hierarchical_memory_limit"),
                hierarchical_swap_limit: s("hierarchical_memsw_limit"),
                total_cache: s("total_cache"),
                total_rss: s("total_rss"),
                total_rss_huge: s("total_rss_huge"),
                total_mapped_file: s("total_mapped_file"),
                total_dirty: s("total_dirty"),
                total_writeback: s("total_writeback"),
                total_pg_pg_in: s("total_pgpgin"),
                total_pg_pg_out: s("total_pgpgout"),
                total_pg_fault: s("total_pgfault"),
                total_pg_maj_fault: s("total_pgmajfault"),
                total_inactive_anon: s("total_inactive_anon"),
                total_active_anon: s("total_active_anon"),
                total_inactive_file: s("total_inactive_file"),
                total_active_file: s("total_active_file"),
                total_unevictable: s("total_unevictable"),
                usage: Some(entry(&mem.usage)),
                swap: Some(entry(&mem.swap)),
                kernel: Some(entry(&mem.kernel)),
                kernel_tcp: Some(entry(&mem.kernel_tcp)),
            }
        }),
        memory_oom_control: stats.memory.as_ref().map(|mem| m::MemoryOomControl {
            oom_kill_disable: mem.oom_kill_disable,
            under_oom: mem.under_oom,
            oom_kill: mem.oom_kill,
        }),
        blkio: stats.blkio.as_ref().map(|b| m::BlkIoStat {
            io_service_bytes_recursive: b.io_service_bytes_recursive.iter().map(blkio).collect(),
            io_serviced_recursive: b.io_serviced_recursive.iter().map(blkio).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn entry(e: &MemoryEntry) -> m::MemoryEntry {
    m::MemoryEntry { limit: e.limit, usage: e.usage, max: e.max, failcnt: e.failcnt }
}

fn blkio(e: &BlkioEntry) -> m::BlkIoEntry {
    m::BlkIoEntry { op: e.op.clone(), device: String::new(), major: e.major, minor: e.minor, value: e.value }
}
