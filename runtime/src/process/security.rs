//! The identity and limits a container process takes on just before it executes: rlimits,
//! scheduling, LSM labels, capabilities, user and groups, no_new_privs and seccomp, in the order runc
//! applies them.

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capability, IOPriorityClass, LinuxSchedulerPolicy, PosixRlimitType, Process, Spec};

use crate::error::{Context, Error, Result};

/// Everything that is not part of a `Process` but decides how it is confined.
pub(crate) struct Confinement<'a> {
    pub seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    pub personality: Option<&'a oci_spec::runtime::LinuxPersonality>,
}

impl<'a> Confinement<'a> {
    pub fn of(spec: &'a Spec) -> Confinement<'a> {
        let linux = spec.linux().as_ref();
        Confinement { seccomp: linux.and_then(|l| l.seccomp().as_ref()), personality: linux.and_then(|l| l.personality().as_ref()) }
    }
}

/// `linux.personality`: the execution domain the program runs in (`LINUX32`: `uname -m` says i686).
fn set_personality(personality: &oci_spec::runtime::LinuxPersonality) -> Result<()> {
    use oci_spec::runtime::LinuxPersonalityDomain;
    if personality.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(Error::spec("linux.personality.flags", "no personality flags are defined"));
    }
    let domain = match personality.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality takes a plain integer and changes only this process.
    if unsafe { libc::personality(domain) } < 0 {
        return Err(Error::io("linux.personality: personality", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A seccomp filter to load last (it needs no_new_privs, which is already set), or the notification
/// descriptor of one already loaded.
pub(crate) enum LateFilter {
    Pending { filter: libseccomp::ScmpFilterContext, notify: bool },
    Loaded(Option<OwnedFd>),
}

impl LateFilter {
    /// Loads the filter if it is still pending; the notification descriptor for the profile's listener.
    pub(crate) fn load(self) -> Result<Option<OwnedFd>> {
        match self {
            LateFilter::Pending { filter, notify } => crate::seccomp::load(&filter, notify),
            LateFilter::Loaded(fd) => Ok(fd),
        }
    }
}

/// Applies the process's limits and identity, in runc's order. A seccomp filter is loaded here when
/// it needs privilege (no no_new_privs); otherwise it is returned, to be loaded as late as possible.
pub(crate) fn apply(process: &Process, confinement: &Confinement<'_>, warn: &mut dyn FnMut(String)) -> Result<LateFilter> {
    if let Some(personality) = confinement.personality {
        set_personality(personality)?;
    }
    for limit in process.rlimits().iter().flatten() {
        set_rlimit(limit.typ(), limit.soft(), limit.hard())?;
    }
    if let Some(scheduler) = process.scheduler() {
        set_scheduler(scheduler)?;
    }
    if let Some(priority) = process.io_priority() {
        set_io_priority(priority.class(), priority.priority())?;
    }
    apply_labels(process)?;

    let no_new_privileges = process.no_new_privileges() == Some(true);
    let notify = confinement.seccomp.is_some_and(crate::seccomp::uses_notify);
    let seccomp = confinement.seccomp.map(crate::seccomp::compile).transpose()?;
    // Without no_new_privs, loading a filter is privileged: do it while we still hold CAP_SYS_ADMIN.
    let mut loaded = None;
    if let (Some(filter), false) = (&seccomp, no_new_privileges) {
        loaded = crate::seccomp::load(filter, notify)?;
    }

    let caps = process.capabilities().as_ref();
    let set = |get: fn(&oci_spec::runtime::LinuxCapabilities) -> &Option<HashSet<Capability>>| -> Result<u64> {
        caps.and_then(|c| get(c).as_ref()).map(capability_mask).unwrap_or(Ok(0))
    };
    let bounding = set(|c| c.bounding())?;
    let effective = set(|c| c.effective())?;
    let permitted = set(|c| c.permitted())?;
    let inheritable = set(|c| c.inheritable())?;
    let ambient = set(|c| c.ambient())?;
    drop_bounding_set(bounding)?;

    // Keep the permitted set across the change of uid; capset below restores the effective set.
    nix::sys::prctl::set_keepcaps(true).context(|| "prctl(PR_SET_KEEPCAPS)".into())?;
    let user = process.user();
    let groups: Vec<Gid> = user.additional_gids().iter().flatten().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).context(|| format!("process.user.additionalGids: setgroups {groups:?}"))?;
    nix::unistd::setresgid(Gid::from_raw(user.gid()), Gid::from_raw(user.gid()), Gid::from_raw(user.gid()))
        .context(|| format!("process.user.gid: set gid {}", user.gid()))?;
    nix::unistd::setresuid(Uid::from_raw(user.uid()), Uid::from_raw(user.uid()), Uid::from_raw(user.uid()))
        .context(|| format!("process.user.uid: set uid {}", user.uid()))?;
    nix::sys::prctl::set_keepcaps(false).context(|| "prctl(PR_SET_KEEPCAPS)".into())?;
    set_capabilities(effective, permitted, inheritable)?;
    set_ambient(ambient, warn);

    if no_new_privileges {
        nix::sys::prctl::set_no_new_privs().context(|| "process.noNewPrivileges: prctl(PR_SET_NO_NEW_PRIVS)".into())?;
        if let Some(filter) = seccomp {
            return Ok(LateFilter::Pending { filter, notify });
        }
    }
    Ok(LateFilter::Loaded(loaded))
}

/// Linux's capability numbers, by the name the spec uses.
const CAPABILITIES: &[&str] = &[
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
];

/// The highest capability this kernel knows.
fn last_capability() -> u32 {
    // Capability sets are 64 bits wide.
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40).min(63)
}

/// A capability set as a bit mask. Capabilities the kernel does not know are left out (runc warns
/// and goes on).
pub(crate) fn capability_mask(set: &HashSet<Capability>) -> Result<u64> {
    let last = last_capability();
    let mut mask = 0u64;
    for cap in set {
        let name = cap.to_string();
        match CAPABILITIES.iter().position(|c| *c == name) {
            Some(bit) if bit as u32 <= last => mask |= 1 << bit,
            Some(_) => tracing::debug!(capability = %name, "not known to this kernel: skipped"),
            None => return Err(Error::spec("process.capabilities", format!("unknown capability CAP_{name}"))),
        }
    }
    Ok(mask)
}

fn drop_bounding_set(keep: u64) -> Result<()> {
    for cap in 0..=last_capability() {
        if keep & (1 << cap) == 0 {
            // SAFETY: PR_CAPBSET_DROP takes a capability number and changes only this process.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
                return Err(Error::io(format!("process.capabilities.bounding: drop capability {cap}"), std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn set_capabilities(effective: u64, permitted: u64, inheritable: u64) -> Result<()> {
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData { effective: effective as u32, permitted: permitted as u32, inheritable: inheritable as u32 },
        CapData { effective: (effective >> 32) as u32, permitted: (permitted >> 32) as u32, inheritable: (inheritable >> 32) as u32 },
    ];
    // SAFETY: capset reads a version-3 header and two data words that live on our stack.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } < 0 {
        return Err(Error::io("process.capabilities: capset", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Raises the ambient capabilities. One the kernel will not raise (not in the permitted and
/// inheritable sets, as in a bundle made by `runc spec`) is skipped with a warning, as runc does.
fn set_ambient(ambient: u64, warn: &mut dyn FnMut(String)) {
    for cap in 0..=last_capability() {
        if ambient & (1 << cap) != 0 {
            // SAFETY: PR_CAP_AMBIENT_RAISE takes a capability number and changes only this process.
            let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, cap as libc::c_ulong, 0, 0) };
            if rc < 0 {
                let name = CAPABILITIES.get(cap as usize).copied().unwrap_or("?");
                warn(format!("process.capabilities.ambient: cannot raise CAP_{name} ({}): skipped", crate::error::lower(&std::io::Error::last_os_error())));
            }
        }
    }
}

fn rlimit_resource(typ: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match typ {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn set_rlimit(typ: PosixRlimitType, soft: u64, hard: u64) -> Result<()> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads an rlimit struct on our stack.
    if unsafe { libc::setrlimit(rlimit_resource(typ), &limit) } < 0 {
        let name = crate::spec::spec_name(&typ);
        return Err(Error::io(format!("process.rlimits: set {name} to {soft}/{hard}"), std::io::Error::last_os_error()));
    }
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

fn set_scheduler(scheduler: &oci_spec::runtime::Scheduler) -> Result<()> {
    let policy = match scheduler.policy() {
        LinuxSchedulerPolicy::SchedOther => libc::SCHED_OTHER,
        LinuxSchedulerPolicy::SchedFifo => libc::SCHED_FIFO,
        LinuxSchedulerPolicy::SchedRr => libc::SCHED_RR,
        LinuxSchedulerPolicy::SchedBatch => libc::SCHED_BATCH,
        LinuxSchedulerPolicy::SchedIdle => libc::SCHED_IDLE,
        LinuxSchedulerPolicy::SchedDeadline => 6,
        LinuxSchedulerPolicy::SchedIso => return Err(Error::spec("process.scheduler.policy", "SCHED_ISO is not supported by Linux")),
    };
    let mut flags = 0u64;
    for flag in scheduler.flags().iter().flatten() {
        flags |= match crate::spec::spec_name(flag).as_str() {
            "SCHED_FLAG_RESET_ON_FORK" => 0x01,
            "SCHED_FLAG_RECLAIM" => 0x02,
            "SCHED_FLAG_DL_OVERRUN" => 0x04,
            "SCHED_FLAG_KEEP_POLICY" => 0x08,
            "SCHED_FLAG_KEEP_PARAMS" => 0x10,
            "SCHED_FLAG_UTIL_CLAMP_MIN" => 0x20,
            "SCHED_FLAG_UTIL_CLAMP_MAX" => 0x40,
            other => return Err(Error::spec("process.scheduler.flags", format!("unknown flag {other}"))),
        };
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: policy as u32,
        flags,
        nice: scheduler.nice().unwrap_or(0),
        priority: scheduler.priority().unwrap_or(0) as u32,
        runtime: scheduler.runtime().unwrap_or(0),
        deadline: scheduler.deadline().unwrap_or(0),
        period: scheduler.period().unwrap_or(0),
    };
    // SAFETY: sched_setattr reads a sched_attr of the size it is told, on our stack, for this thread.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } < 0 {
        return Err(Error::io("process.scheduler: sched_setattr", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_io_priority(class: IOPriorityClass, priority: i64) -> Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_SHIFT: i64 = 13;
    let class = match class {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    if !(0..8).contains(&priority) {
        return Err(Error::spec("process.ioPriority.priority", format!("{priority} is not within 0..7")));
    }
    // SAFETY: ioprio_set takes plain integers and changes only this process.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, (class << IOPRIO_CLASS_SHIFT) | priority) } < 0 {
        return Err(Error::io("process.ioPriority: ioprio_set", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.starts_with('Y'))
}

fn selinux_enabled() -> bool {
    std::fs::read_to_string("/sys/fs/selinux/enforce").is_ok()
}

/// Checks the process's LSM labels the way runc does: a label for an LSM that is not running is an
/// error, not silently dropped.
pub(crate) fn check_labels(process: &Process) -> Result<()> {
    if process.apparmor_profile().as_deref().is_some_and(|p| !p.is_empty()) && !apparmor_enabled() {
        return Err(Error::spec("process.apparmorProfile", "apparmor: config provided but apparmor not supported"));
    }
    if process.selinux_label().as_deref().is_some_and(|l| !l.is_empty()) && !selinux_enabled() {
        return Err(Error::spec("process.selinuxLabel", "selinux label is specified in config, but selinux is disabled or not supported"));
    }
    Ok(())
}

/// Asks the LSMs to put the program under its labels at exec, through the container's procfs,
/// verified first: a fake or covered `/proc` must not make a label vanish (CVE-2019-16884).
fn apply_labels(process: &Process) -> Result<()> {
    check_labels(process)?;
    let apparmor = process.apparmor_profile().as_deref().filter(|p| !p.is_empty());
    let selinux = process.selinux_label().as_deref().filter(|l| !l.is_empty());
    if apparmor.is_none() && selinux.is_none() {
        return Ok(());
    }
    let procfs = crate::rootfs::procfs::Procfs::open(std::path::Path::new("/proc"))?;
    let attr = procfs.own_dir()?.join("attr");
    if let Some(profile) = apparmor {
        let file = if procfs.open_file(&attr.join("apparmor/exec"), nix::fcntl::OFlag::O_PATH).is_ok() { attr.join("apparmor/exec") } else { attr.join("exec") };
        procfs.write(&file, &format!("exec {profile}")).map_err(|e| e.prefixed("process.apparmorProfile"))?;
    }
    if let Some(label) = selinux {
        procfs.write(&attr.join("exec"), label).map_err(|e| e.prefixed("process.selinuxLabel"))?;
    }
    Ok(())
}

