//! The systemd cgroup driver: on hosts where systemd runs the cgroup tree (kubelet and containerd's
//! CRI with `cgroupDriver: systemd`), a container's group is a transient systemd unit created over
//! D-Bus, never a directory made behind systemd's back.
//!
//! A cgroups path `slice:prefix:name` means the scope `prefix-name.scope` in `slice` (runc's rules:
//! slice names expand along their dashes, `a-b.slice` → `a.slice/a-b.slice`; an empty slice is
//! `system.slice`; a `name` ending in `.slice` makes a slice unit instead). The unit is started with
//! `StartTransientUnit` holding the container's first process, `Delegate=yes` and the resource
//! properties systemd understands; what systemd cannot express is then written to the unit's cgroup
//! files by the cgroupfs code, as runc does. Delete stops the unit, and systemd removes its group.
//!
//! D-Bus is spoken through the `dbus` crate (dbus-rs, libdbus built from source into the binary): a
//! small synchronous API that fits the runtime's synchronous code, starts no threads and no executor,
//! and is maintained alongside libdbus itself; a connection is opened only when a unit is started,
//! changed or stopped, and closed afterwards.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbus::arg::{RefArg, Variant};
use dbus::blocking::Connection;
use dbus::message::MatchRule;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use super::v2::{blkio_to_io_weight, shares_to_weight};
use crate::error::{Error, Result};

const DESTINATION: &str = "org.freedesktop.systemd1";
const OBJECT: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// How long a call or a job may take before the runtime gives up on systemd.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The scope prefix when the spec gives no cgroups path.
pub const DEFAULT_PREFIX: &str = "myshim";

/// A container's transient unit: its name and the slice it lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub name: String,
    pub slice: String,
}

fn invalid(path: &str, reason: impl Into<String>) -> Error {
    Error::spec("linux.cgroupsPath", format!("{path:?}: {}", reason.into()))
}

/// Whether `path` has the systemd driver's form (`slice:prefix:name`).
pub fn is_systemd_path(path: &str) -> bool {
    path.split(':').count() == 3
}

impl Unit {
    /// The unit for the spec's cgroups path; `id` names it when the path is empty.
    pub fn parse(path: &str, id: &str) -> Result<Unit> {
        let (slice, prefix, name) = if path.is_empty() {
            ("", DEFAULT_PREFIX, id)
        } else {
            match path.split(':').collect::<Vec<_>>()[..] {
                [slice, prefix, name] => (slice, prefix, name),
                _ => return Err(invalid(path, "the systemd cgroup driver expects \"slice:prefix:name\"")),
            }
        };
        if name.is_empty() || name.contains('/') {
            return Err(invalid(path, "the name part must be non-empty and hold no '/'"));
        }
        let slice = if slice.is_empty() { "system.slice".to_owned() } else { slice.to_owned() };
        expand_slice(&slice).map_err(|reason| invalid(path, reason))?;
        let name = if name.ends_with(".slice") {
            expand_slice(name).map_err(|reason| invalid(path, reason))?;
            name.to_owned()
        } else {
            format!("{prefix}-{name}.scope")
        };
        Ok(Unit { name, slice })
    }

    pub fn is_slice(&self) -> bool {
        self.name.ends_with(".slice")
    }

    /// The unit's group, relative to the root of the cgroup hierarchy.
    pub fn cgroup_path(&self) -> String {
        if self.is_slice() {
            // A slice's place follows from its own name.
            expand_slice(&self.name).unwrap_or_default()
        } else {
            format!("{}/{}", expand_slice(&self.slice).unwrap_or_default().trim_end_matches('/'), self.name)
        }
    }
}

/// A slice's path in the cgroup tree: `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`, `-.slice` →
/// `/` (systemd's naming rules).
pub fn expand_slice(slice: &str) -> std::result::Result<String, String> {
    let stem = slice.strip_suffix(".slice").filter(|s| !s.is_empty()).ok_or_else(|| format!("{slice:?} is not a slice name (name.slice)"))?;
    if slice.contains('/') {
        return Err(format!("slice {slice:?} holds a '/'"));
    }
    if stem == "-" {
        return Ok("/".to_owned());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in stem.split('-') {
        if component.is_empty() {
            return Err(format!("slice {slice:?} has an empty component (leading, trailing or double '-')"));
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(component);
        path.push_str(".slice");
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

/// Whether systemd runs this host (what `sd_booted()` checks).
pub fn is_running() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// A unit property as D-Bus carries it: a name and a variant.
type Property = (String, Variant<Box<dyn RefArg>>);

fn property<T: RefArg + 'static>(name: &str, value: T) -> Property {
    (name.to_owned(), Variant(Box::new(value)))
}

/// systemd's "infinity" for sizes and counts.
const INFINITY: u64 = u64::MAX;

/// `AllowedCPUs`/`AllowedMemoryNodes` take a bit mask (byte 0 holds CPUs 0–7); the spec gives a
/// list like `0-3,7`.
fn cpu_mask(list: &str, field: &str) -> Result<Vec<u8>> {
    let mut mask = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| Error::spec(field, format!("{list:?} is not a list of numbers and ranges")));
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if first > last || last >= 1 << 16 {
            return Err(Error::spec(field, format!("{list:?}: bad range {part:?}")));
        }
        for bit in first..=last {
            if mask.len() <= bit / 8 {
                mask.resize(bit / 8 + 1, 0);
            }
            mask[bit / 8] |= 1 << (bit % 8);
        }
    }
    Ok(mask)
}

/// CPU quota as systemd stores it: microseconds per second of CPU time, in whole percent (10 ms). The
/// quota written to `cpu.max` is rounded the same way, so that systemd re-applying the unit (at a
/// daemon-reload) leaves it as it is (runc does the same).
pub fn systemd_quota(quota: i64, period: u64) -> (u64, i64) {
    if quota <= 0 || period == 0 {
        return (INFINITY, quota);
    }
    let per_second = (quota as u128 * 1_000_000 / period as u128) as u64;
    let rounded = per_second.div_ceil(10_000).saturating_mul(10_000);
    (rounded, (rounded as u128 * period as u128 / 1_000_000) as i64)
}

/// `resources` with the CPU quota systemd keeps for them (see [`systemd_quota`]).
pub fn with_systemd_quota(resources: &LinuxResources) -> LinuxResources {
    let mut rounded = resources.clone();
    if let Some(cpu) = resources.cpu() {
        if let Some(quota) = cpu.quota() {
            let mut cpu = cpu.clone();
            cpu.set_quota(Some(systemd_quota(quota, cpu.period().unwrap_or(100_000)).1));
            rounded.set_cpu(Some(cpu));
        }
    }
    rounded
}

/// The resource properties systemd understands, for a unit on a pure v2 host.
fn resource_properties(resources: &LinuxResources) -> Result<Vec<Property>> {
    let mut properties = Vec::new();
    if let Some(memory) = resources.memory() {
        let size = |v: i64| if v < 0 { INFINITY } else { v as u64 };
        if let Some(limit) = memory.limit() {
            properties.push(property("MemoryMax", size(limit)));
        }
        if let Some(reservation) = memory.reservation() {
            properties.push(property("MemoryLow", size(reservation)));
        }
        if let Some(swap) = memory.swap() {
            // OCI's swap is memory+swap; systemd (like v2) limits swap alone.
            let swap_only = match (swap, memory.limit()) {
                (s, _) if s < 0 => INFINITY,
                (s, Some(limit)) if limit >= 0 => (s - limit).max(0) as u64,
                (s, _) => s as u64,
            };
            properties.push(property("MemorySwapMax", swap_only));
        }
    }
    if let Some(cpu) = resources.cpu() {
        if let Some(shares) = cpu.shares() {
            properties.push(property("CPUWeight", shares_to_weight(shares)));
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let period = cpu.period().unwrap_or(100_000);
            properties.push(property("CPUQuotaPeriodUSec", period));
            properties.push(property("CPUQuotaPerSecUSec", systemd_quota(cpu.quota().unwrap_or(-1), period).0));
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            properties.push(property("AllowedCPUs", cpu_mask(cpus, "linux.resources.cpu.cpus")?));
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            properties.push(property("AllowedMemoryNodes", cpu_mask(mems, "linux.resources.cpu.mems")?));
        }
    }
    if let Some(pids) = resources.pids() {
        properties.push(property("TasksMax", if pids.limit() > 0 { pids.limit() as u64 } else { INFINITY }));
    }
    if let Some(weight) = resources.block_io().as_ref().and_then(|io| io.weight()) {
        properties.push(property("IOWeight", blkio_to_io_weight(weight)));
    }
    Ok(properties)
}

/// A connection to systemd over the system bus, for one operation.
struct Systemd {
    connection: Connection,
    /// JobRemoved signals seen: (job object, result).
    finished: Arc<Mutex<Vec<(String, String)>>>,
}

/// A D-Bus error as the runtime's, naming what was being done.
fn bus_error(what: &str, error: dbus::Error) -> Error {
    let reason = match (error.name(), error.message()) {
        (Some(name), Some(message)) => format!("{message} ({name})"),
        (_, Some(message)) => message.to_owned(),
        _ => "unknown D-Bus error".to_owned(),
    };
    Error::io(format!("systemd cgroup driver: {what}"), std::io::Error::other(reason))
}

impl Systemd {
    fn connect() -> Result<Systemd> {
        if !is_running() {
            return Err(Error::Unsupported(
                "systemd cgroup driver: systemd does not run this host (no /run/systemd/system); use a cgroupfs path or driver".into(),
            ));
        }
        let connection = Connection::new_system().map_err(|e| bus_error("connect to the system bus (is dbus running?)", e))?;
        let finished = Arc::new(Mutex::new(Vec::new()));
        let seen = finished.clone();
        connection
            .add_match(MatchRule::new_signal(MANAGER, "JobRemoved"), move |(_, job, _, result): (u32, dbus::Path<'static>, String, String), _: &Connection, _: &dbus::Message| {
                seen.lock().unwrap_or_else(|p| p.into_inner()).push((job.to_string(), result));
                true
            })
            .map_err(|e| bus_error("watch systemd's jobs", e))?;
        // systemd sends its job signals only while some client has subscribed.
        let systemd = Systemd { connection, finished };
        systemd.call::<()>("subscribe to systemd's signals", "Subscribe", ())?;
        Ok(systemd)
    }

    fn call<R: dbus::arg::ReadAll>(&self, what: &str, method: &str, args: impl dbus::arg::AppendAll) -> Result<R> {
        self.connection.with_proxy(DESTINATION, OBJECT, TIMEOUT).method_call(MANAGER, method, args).map_err(|e| bus_error(what, e))
    }

    /// Waits for systemd to finish `job`; its result (`done` when it worked).
    fn wait_for(&self, job: &dbus::Path<'static>, what: &str) -> Result<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some((_, result)) = self.finished.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(j, _)| j == &job.to_string()) {
                return Ok(result.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::io(format!("systemd cgroup driver: {what}"), std::io::Error::new(std::io::ErrorKind::TimedOut, "systemd did not finish the job")));
            }
            self.connection.process(left.min(Duration::from_millis(100))).map_err(|e| bus_error(what, e))?;
        }
    }

    fn reset_failed(&self, unit: &str) {
        let _ = self.call::<()>("reset a failed unit", "ResetFailedUnit", (unit,));
    }
}

/// Starts the container's unit holding `pid`, with `resources` as unit properties, and waits until
/// systemd has made it. A failed leftover of the same name is reset and the start tried once more
/// (runc does the same).
pub fn start(unit: &Unit, id: &str, pid: u32, resources: Option<&LinuxResources>) -> Result<()> {
    let systemd = Systemd::connect()?;
    let mut properties = vec![property("Description", format!("myshim container {id}"))];
    if unit.is_slice() {
        properties.push(property("Wants", unit.slice.clone()));
    } else {
        properties.push(property("Slice", unit.slice.clone()));
        properties.push(property("Delegate", true));
    }
    properties.push(property("PIDs", vec![pid]));
    for accounting in ["MemoryAccounting", "CPUAccounting", "IOAccounting", "TasksAccounting"] {
        properties.push(property(accounting, true));
    }
    properties.push(property("DefaultDependencies", false));
    if let Some(resources) = resources {
        properties.extend(resource_properties(resources)?);
    }
    let what = format!("start unit {}", unit.name);
    let aux: Vec<(String, Vec<Property>)> = Vec::new();
    let start_transient = || {
        systemd.connection.with_proxy(DESTINATION, OBJECT, TIMEOUT).method_call::<(dbus::Path<'static>,), _, _, _>(
            MANAGER,
            "StartTransientUnit",
            (unit.name.as_str(), "replace", &properties, &aux),
        )
    };
    let unit_exists = |e: &dbus::Error| e.name() == Some("org.freedesktop.systemd1.UnitExists");
    let job = match start_transient() {
        Ok((job,)) => job,
        Err(e) if unit_exists(&e) => {
            systemd.reset_failed(&unit.name);
            match start_transient() {
                Ok((job,)) => job,
                Err(e) if unit_exists(&e) => {
                    return Err(Error::spec("linux.cgroupsPath", format!("unit {} already exists: it is another container's", unit.name)));
                }
                Err(e) => return Err(bus_error(&what, e)),
            }
        }
        Err(e) => return Err(bus_error(&what, e)),
    };
    match systemd.wait_for(&job, &what)?.as_str() {
        "done" => Ok(()),
        result => {
            systemd.reset_failed(&unit.name);
            Err(Error::io(format!("systemd cgroup driver: {what}"), std::io::Error::other(format!("systemd's job ended with {result:?}"))))
        }
    }
}

/// Changes the unit's resource properties (for the running unit only, as runc does).
pub fn update(unit: &Unit, resources: &LinuxResources) -> Result<()> {
    let properties = resource_properties(resources)?;
    if properties.is_empty() {
        return Ok(());
    }
    let systemd = Systemd::connect()?;
    systemd.call::<()>(&format!("set properties of unit {}", unit.name), "SetUnitProperties", (unit.name.as_str(), true, &properties))
}

/// Stops the unit and waits until it is gone (with it, its group). A unit already gone is fine.
pub fn stop(unit: &Unit) -> Result<()> {
    let systemd = Systemd::connect()?;
    let what = format!("stop unit {}", unit.name);
    match systemd.call::<(dbus::Path<'static>,)>(&what, "StopUnit", (unit.name.as_str(), "replace")) {
        Ok((job,)) => {
            let result = systemd.wait_for(&job, &what)?;
            if result != "done" {
                tracing::warn!(unit = %unit.name, result, "systemd did not stop the unit cleanly");
            }
        }
        Err(e) if e.to_string().contains("NoSuchUnit") || e.to_string().contains("not loaded") => {}
        Err(e) => return Err(e),
    }
    systemd.reset_failed(&unit.name);
    Ok(())
}

/// Where the unit's group is in a hierarchy mounted at `mount_point`.
pub fn group_dir(unit: &Unit, mount_point: &std::path::Path) -> PathBuf {
    mount_point.join(unit.cgroup_path().trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_runcs_rules() {
        let unit = Unit::parse("system.slice:myshim:c1", "c1").unwrap();
        assert_eq!(unit, Unit { name: "myshim-c1.scope".into(), slice: "system.slice".into() });
        assert_eq!(unit.cgroup_path(), "/system.slice/myshim-c1.scope");
        let pod = Unit::parse("kubepods-besteffort-pod12ab.slice:cri-containerd:abc", "abc").unwrap();
        assert_eq!(pod.cgroup_path(), "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12ab.slice/cri-containerd-abc.scope");
        assert_eq!(Unit::parse(":runc:x", "x").unwrap().slice, "system.slice");
        assert_eq!(Unit::parse("", "c9").unwrap().name, "myshim-c9.scope");
        let slice = Unit::parse("system.slice:ignored:machine-test.slice", "x").unwrap();
        assert!(slice.is_slice());
        assert_eq!(slice.cgroup_path(), "/machine.slice/machine-test.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        for bad in ["a:b", "a:b:c:d", "nots:p:n", "a--b.slice:p:n", "-a.slice:p:n", "a/b.slice:p:n", "system.slice:p:", "system.slice:p:a/b"] {
            let err = Unit::parse(bad, "x").unwrap_err().to_string();
            assert!(err.contains("linux.cgroupsPath"), "{bad}: {err}");
        }
        assert!(is_systemd_path("a.slice:b:c") && !is_systemd_path("/a/b"));
    }

    #[test]
    fn quota_and_cpu_lists_as_systemd_takes_them() {
        assert_eq!(systemd_quota(50_000, 100_000), (500_000, 50_000));
        // 12.345 % of a CPU is stored as 13 %, and written to cpu.max the same way.
        assert_eq!(systemd_quota(12_345, 100_000), (130_000, 13_000));
        assert_eq!(systemd_quota(-1, 100_000).0, INFINITY);
        assert_eq!(cpu_mask("0-3,9", "f").unwrap(), vec![0x0f, 0x02]);
        assert!(cpu_mask("3-1", "f").is_err() && cpu_mask("x", "f").is_err());
    }

    /// Without systemd the driver says so; with it (the guest lane) it reaches systemd.
    #[test]
    fn the_driver_needs_systemd() {
        match Systemd::connect() {
            Ok(_) => assert!(is_running()),
            Err(e) => {
                assert!(!is_running(), "{e}");
                assert!(e.to_string().contains("systemd does not run this host"), "{e}");
            }
        }
    }
}
