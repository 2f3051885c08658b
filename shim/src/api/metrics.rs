//! The runtime's cgroup statistics as containerd's `io.containerd.cgroups.v1.Metrics`.

use myshim_protos::io::containerd::cgroups::v1 as m;
use myshim_runtime::cgroups::stats::{BlkioEntry, MemoryEntry, Stats};

pub fn v1_metrics(stats: &Stats) -> m::Metrics {
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
