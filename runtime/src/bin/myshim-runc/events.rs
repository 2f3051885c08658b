//! `events`: the container's statistics and OOM kills as runc prints them, one JSON object per line
//! (`{"type":"stats","id":…,"data":{…}}`, `{"type":"oom","id":…}`), in the shape of runc's
//! `types.Stats`, which tools that read `runc events` decode.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use myshim_runtime::cgroups::stats::{BlkioEntry, MemoryEntry, Stats, V1Stats, V2Stats};
use myshim_runtime::Container;
use serde_json::{json, Map, Value};

/// `events --stats`: one stats event. Otherwise a stats event every `interval` and an OOM event for
/// every kill, until the container has stopped.
pub fn run(container: &Container, stats_once: bool, interval: Duration) -> Result<()> {
    let id = &container.state().id;
    if !container.state().init_is_alive() {
        bail!("container with id {id} is not running");
    }
    if stats_once {
        return print(json!({ "type": "stats", "id": id, "data": runc_stats(&container.stats()?) }));
    }
    if interval.is_zero() {
        bail!("--interval must be greater than 0");
    }
    let mut watch = container.oom_watch()?;
    let notifications = watch.as_mut().and_then(|w| w.take_notifications());
    let mut next_stats = Instant::now() + interval;
    loop {
        let woke_by_notification = wait_for(notifications.as_ref(), next_stats)?;
        if woke_by_notification {
            // A v1 eventfd also fires when the group is removed: no kill then.
            if !memory_group_exists(container) {
                return Ok(());
            }
            if watch.as_mut().is_some_and(|w| w.fired()) {
                print(json!({ "type": "oom", "id": id }))?;
            }
        }
        if !container.state().init_is_alive() {
            return Ok(());
        }
        if Instant::now() >= next_stats {
            print(json!({ "type": "stats", "id": id, "data": runc_stats(&container.stats()?) }))?;
            next_stats += interval;
        }
    }
}

fn print(event: Value) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{event}").and_then(|()| out.flush()).context("write an event to stdout")
}

/// Waits until `deadline`, or until the notification descriptor is readable (then drained: an
/// eventfd or inotify descriptor reads like a pipe). Returns whether it was.
fn wait_for(notifications: Option<&OwnedFd>, deadline: Instant) -> Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1).unwrap_or(PollTimeout::MAX);
    let Some(fd) = notifications else {
        std::thread::sleep(left);
        return Ok(false);
    };
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(false),
        Ok(_) => {
            let mut buffer = [0u8; 4096];
            nix::unistd::read(fd, &mut buffer).context("read the OOM notification")?;
            Ok(true)
        }
        Err(e) => Err(e).context("wait for OOM notifications"),
    }
}

fn memory_group_exists(container: &Container) -> bool {
    let Some(cgroup) = &container.state().cgroup else { return false };
    match cgroup.dir_of("memory") {
        Some(dir) => dir.exists(),
        None => cgroup.unified_dir().is_some_and(|d| d.dir.exists()),
    }
}

/// runc's `types.Stats` (the JSON names and omissions of runc's `types/events.go`).
fn runc_stats(stats: &Stats) -> Value {
    let mut data = match stats {
        Stats::V1(v1) => from_v1(v1),
        Stats::V2(v2) => from_v2(v2),
    };
    data.insert("cpuset".into(), json!({}));
    data.insert("intel_rdt".into(), json!({}));
    data.insert("network_interfaces".into(), Value::Null);
    Value::Object(data)
}

fn from_v1(s: &V1Stats) -> Map<String, Value> {
    let mut data = Map::new();
    let cpu = s.cpu.clone().unwrap_or_default();
    data.insert("cpu".into(), cpu_json(cpu.total, &cpu.per_cpu, cpu.kernel, cpu.user, cpu.periods, cpu.throttled_periods, cpu.throttled_time));
    let memory = s.memory.clone().unwrap_or_default();
    data.insert(
        "memory".into(),
        memory_json(memory.stat.get("cache").copied().unwrap_or(0), &memory.usage, &memory.swap, &memory.kernel, &memory.kernel_tcp, &memory.stat),
    );
    let pids = s.pids.clone().unwrap_or_default();
    data.insert("pids".into(), pids_json(pids.current, pids.limit));
    let blkio = s.blkio.clone().unwrap_or_default();
    data.insert("blkio".into(), blkio_json(&blkio.io_service_bytes_recursive, &blkio.io_serviced_recursive));
    data.insert("hugetlb".into(), json!({}));
    data
}

/// v2's files in v1's terms, as runc reports them: nanoseconds, swap as memory plus swap, `io.stat`
/// as Read/Write/Discard entries.
fn from_v2(s: &V2Stats) -> Map<String, Value> {
    let mut data = Map::new();
    let cpu = |key: &str| s.cpu.get(key).copied().unwrap_or(0);
    data.insert(
        "cpu".into(),
        cpu_json(cpu("usage_usec") * 1000, &[], cpu("system_usec") * 1000, cpu("user_usec") * 1000, cpu("nr_periods"), cpu("nr_throttled"), cpu("throttled_usec") * 1000),
    );
    // The stats read "max" (no limit) as 0; runc reports it as the largest value.
    let limit = |value: u64| if value == 0 { u64::MAX } else { value };
    let failures = s.memory_events.get("max").copied().unwrap_or(0);
    let usage = MemoryEntry { limit: limit(s.memory_max), usage: s.memory_current, max: 0, failcnt: failures };
    let swap_limit = match (limit(s.swap_max), limit(s.memory_max)) {
        (u64::MAX, _) | (_, u64::MAX) => u64::MAX,
        (swap, memory) => swap.saturating_add(memory),
    };
    let swap = MemoryEntry { limit: swap_limit, usage: s.swap_current + s.memory_current, max: 0, failcnt: 0 };
    let cache = s.memory.get("file").copied().unwrap_or(0);
    data.insert("memory".into(), memory_json(cache, &usage, &swap, &MemoryEntry::default(), &MemoryEntry::default(), &s.memory));
    data.insert("pids".into(), pids_json(s.pids_current, s.pids_max));
    let entries = |pairs: &[(&str, &str)]| -> Vec<BlkioEntry> {
        s.io.iter()
            .flat_map(|(major, minor, values)| {
                pairs.iter().filter_map(move |(key, op)| {
                    values.get(*key).map(|value| BlkioEntry { op: (*op).into(), major: *major, minor: *minor, value: *value })
                })
            })
            .collect()
    };
    let bytes = entries(&[("rbytes", "Read"), ("wbytes", "Write"), ("dbytes", "Discard")]);
    let ios = entries(&[("rios", "Read"), ("wios", "Write"), ("dios", "Discard")]);
    data.insert("blkio".into(), blkio_json(&bytes, &ios));
    let hugetlb: Map<String, Value> = s.hugetlb.iter().map(|(size, usage, _limit)| (size.clone(), omit_zero(json!({ "usage": usage, "failcnt": 0 }), &["usage"]))).collect();
    data.insert("hugetlb".into(), Value::Object(hugetlb));
    data
}

/// Removes the named keys whose value is 0 (Go's `omitempty`).
fn omit_zero(mut value: Value, keys: &[&str]) -> Value {
    if let Some(object) = value.as_object_mut() {
        let empty = |v: &Value| v == &json!(0) || v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(Map::is_empty);
        object.retain(|k, v| !(keys.contains(&k.as_str()) && empty(v)));
    }
    value
}

fn cpu_json(total: u64, per_cpu: &[u64], kernel: u64, user: u64, periods: u64, throttled_periods: u64, throttled_time: u64) -> Value {
    json!({
        "usage": omit_zero(json!({ "total": total, "percpu": per_cpu, "kernel": kernel, "user": user }), &["total", "percpu"]),
        "throttling": omit_zero(
            json!({ "periods": periods, "throttledPeriods": throttled_periods, "throttledTime": throttled_time }),
            &["periods", "throttledPeriods", "throttledTime"],
        ),
    })
}

/// An entry with nothing in it (v2 has no kernel memory accounting) is left out, as runc's `omitzero`.
fn memory_entry_json(entry: &MemoryEntry) -> Value {
    if entry.limit == 0 && entry.usage == 0 && entry.max == 0 && entry.failcnt == 0 {
        return json!({});
    }
    omit_zero(json!({ "limit": entry.limit, "usage": entry.usage, "max": entry.max, "failcnt": entry.failcnt }), &["usage", "max"])
}

fn memory_json(cache: u64, usage: &MemoryEntry, swap: &MemoryEntry, kernel: &MemoryEntry, kernel_tcp: &MemoryEntry, raw: &std::collections::HashMap<String, u64>) -> Value {
    let raw: std::collections::BTreeMap<_, _> = raw.iter().collect();
    omit_zero(
        json!({
            "cache": cache,
            "usage": memory_entry_json(usage),
            "swap": memory_entry_json(swap),
            "kernel": memory_entry_json(kernel),
            "kernelTCP": memory_entry_json(kernel_tcp),
            "raw": raw,
        }),
        &["cache", "usage", "swap", "kernel", "kernelTCP", "raw"],
    )
}

fn pids_json(current: u64, limit: u64) -> Value {
    omit_zero(json!({ "current": current, "limit": limit }), &["current", "limit"])
}

fn blkio_json(service_bytes: &[BlkioEntry], serviced: &[BlkioEntry]) -> Value {
    let entries = |list: &[BlkioEntry]| -> Vec<Value> {
        list.iter().map(|e| omit_zero(json!({ "major": e.major, "minor": e.minor, "op": e.op, "value": e.value }), &["major", "minor", "value"])).collect()
    };
    omit_zero(json!({ "ioServiceBytesRecursive": entries(service_bytes), "ioServicedRecursive": entries(serviced) }), &["ioServiceBytesRecursive", "ioServicedRecursive"])
}

/// A duration as Go writes it (`5s`, `500ms`, `1m30s`, `2h`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let unit_end = rest[number_end..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| number_end + i);
        let value: f64 = rest[..number_end].parse().with_context(|| format!("--interval {text:?}: not a duration (5s, 500ms, 1m)"))?;
        let seconds = match &rest[number_end..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => bail!("--interval {text:?}: not a duration (5s, 500ms, 1m)"),
        };
        total += value * seconds;
        rest = &rest[unit_end..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}
