//! The OCI seccomp profile compiled with libseccomp and loaded into the process about to exec.

use std::str::FromStr;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use crate::error::{Error, Result};
use crate::spec::spec_name;

fn field(name: &str, reason: impl Into<String>) -> Error {
    Error::spec(format!("linux.seccomp.{name}"), reason)
}

fn action(action: LinuxSeccompAction, errno: Option<u32>, default_errno: u32) -> Result<ScmpAction> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno.unwrap_or(default_errno) as i32),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno.unwrap_or(default_errno) as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

/// Whether the profile hands some system calls to a listener (`SCMP_ACT_NOTIFY`).
pub(crate) fn uses_notify(profile: &LinuxSeccomp) -> bool {
    profile.default_action() == LinuxSeccompAction::ScmpActNotify || profile.syscalls().iter().flatten().any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// Checks what can be checked without compiling: actions, architectures and flags are known.
pub(crate) fn validate(profile: &LinuxSeccomp) -> Result<()> {
    let eperm = libc::EPERM as u32;
    action(profile.default_action(), profile.default_errno_ret(), eperm)?;
    for arch in profile.architectures().iter().flatten() {
        let name = spec_name(arch);
        ScmpArch::from_str(&name).map_err(|_| field("architectures", format!("unknown architecture {name}")))?;
    }
    for flag in profile.flags().iter().flatten() {
        let name = spec_name(flag);
        if !KNOWN_FLAGS.contains(&name.as_str()) {
            return Err(field("flags", format!("unknown flag {name}")));
        }
    }
    for rule in profile.syscalls().iter().flatten() {
        action(rule.action(), rule.errno_ret(), eperm)?;
    }
    match (uses_notify(profile), profile.listener_path()) {
        (true, None) => return Err(field("listenerPath", "SCMP_ACT_NOTIFY needs a listener socket to hand the notifications to")),
        (_, Some(path)) if !path.is_absolute() => return Err(field("listenerPath", format!("{} is not an absolute path", path.display()))),
        _ => {}
    }
    if profile.default_action() == LinuxSeccompAction::ScmpActNotify {
        // The runtime's own calls after the filter (reporting, exec) would wait on the listener.
        return Err(field("defaultAction", "SCMP_ACT_NOTIFY cannot be the default action"));
    }
    // The init hands the listener its descriptor with sendmsg and reports with write once the filter
    // is loaded: trapped, they would wait for a listener that never got the descriptor (runc refuses
    // write for the same reason).
    for rule in profile.syscalls().iter().flatten().filter(|r| r.action() == LinuxSeccompAction::ScmpActNotify) {
        if let Some(name) = rule.names().iter().find(|n| RUNTIME_CALLS_AFTER_LOAD.contains(&n.as_str())) {
            return Err(field("syscalls", format!("SCMP_ACT_NOTIFY cannot be used for {name} (the runtime needs it to hand over the listener's descriptor)")));
        }
    }
    Ok(())
}

/// System calls the init makes between loading a notifying filter and handing its descriptor over.
const RUNTIME_CALLS_AFTER_LOAD: &[&str] = &["write", "sendmsg"];

const KNOWN_FLAGS: &[&str] = &["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"];

/// Compiles the profile. Syscalls this kernel or libseccomp does not know are skipped, as runc does.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let libseccomp_error = |what: &str, e: libseccomp::error::SeccompError| field(what, e.to_string().to_lowercase());
    // defaultErrnoRet is the errno of the default action; a rule's errno action without errnoRet
    // returns EPERM (runc's reading of the spec).
    let eperm = libc::EPERM as u32;
    let default = action(profile.default_action(), profile.default_errno_ret(), eperm)?;
    let mut filter = ScmpFilterContext::new(default).map_err(|e| libseccomp_error("defaultAction", e))?;
    // The caller decides about no_new_privs; libseccomp must not set it behind our back.
    filter.set_ctl_nnp(false).map_err(|e| libseccomp_error("defaultAction", e))?;
    for arch in profile.architectures().iter().flatten() {
        let name = spec_name(arch);
        let arch = ScmpArch::from_str(&name).map_err(|_| field("architectures", format!("unknown architecture {name}")))?;
        filter.add_arch(arch).map_err(|e| libseccomp_error("architectures", e))?;
    }
    for flag in profile.flags().iter().flatten() {
        match spec_name(flag).as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => filter.set_ctl_tsync(true),
            "SECCOMP_FILTER_FLAG_LOG" => filter.set_ctl_log(true),
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => filter.set_ctl_ssb(true),
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => filter.set_ctl_waitkill(true),
            other => return Err(field("flags", format!("unknown flag {other}"))),
        }
        .map_err(|e| libseccomp_error("flags", e))?;
    }
    for (i, rule) in profile.syscalls().iter().flatten().enumerate() {
        let rule_action = action(rule.action(), rule.errno_ret(), eperm)?;
        if rule_action == default {
            continue; // libseccomp refuses rules that repeat the default action
        }
        let comparators = rule
            .args()
            .iter()
            .flatten()
            .map(|arg| {
                let op = match arg.op() {
                    LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                    LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                    LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                    LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                    LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                    LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                    LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(arg.value()),
                };
                let datum = match arg.op() {
                    LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
                    _ => arg.value(),
                };
                ScmpArgCompare::new(arg.index() as u32, op, datum)
            })
            .collect::<Vec<_>>();
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                tracing::debug!(syscall = %name, "seccomp: unknown syscall skipped");
                continue;
            };
            let added = if comparators.is_empty() {
                filter.add_rule(rule_action, syscall)
            } else {
                filter.add_rule_conditional(rule_action, syscall, &comparators)
            };
            added.map_err(|e| libseccomp_error(&format!("syscalls[{i}] ({name})"), e))?;
        }
    }
    Ok(filter)
}

/// Loads a compiled filter into this process (and its future children). With `notify`, returns the
/// filter's notification descriptor (a copy the caller owns), for the profile's listener.
pub(crate) fn load(filter: &ScmpFilterContext, notify: bool) -> Result<Option<std::os::fd::OwnedFd>> {
    let error = |what: &str, e: libseccomp::error::SeccompError| Error::io(what.to_owned(), std::io::Error::other(e.to_string().to_lowercase()));
    filter.load().map_err(|e| error("load the seccomp filter", e))?;
    if !notify {
        return Ok(None);
    }
    let fd = filter.get_notify_fd().map_err(|e| error("linux.seccomp: get the notification descriptor", e))?;
    // SAFETY: the descriptor stays open (libseccomp keeps it); it is only borrowed to duplicate it.
    let copy = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().map_err(|e| Error::io("linux.seccomp: duplicate the notification descriptor", e))?;
    Ok(Some(copy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn compiles_actions_arguments_and_flags() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[{"names":["read","write","no_such_syscall_xyz"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        );
        let filter = compile(&p).unwrap();
        assert_eq!(filter.get_act_default().unwrap(), ScmpAction::Errno(38));
        assert!(filter.get_ctl_log().unwrap());
        assert!(!filter.get_ctl_nnp().unwrap());
    }

    #[test]
    fn notify_needs_a_listener() {
        let p = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_NOTIFY"}]}"#);
        let err = validate(&p).unwrap_err().to_string();
        assert!(err.contains("linux.seccomp.listenerPath") && err.contains("NOTIFY"), "{err}");
        let p = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/listener.sock","syscalls":[{"names":["mount"],"action":"SCMP_ACT_NOTIFY"}]}"#);
        validate(&p).unwrap();
        assert!(uses_notify(&p));
        let p = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/listener.sock","syscalls":[{"names":["read","write"],"action":"SCMP_ACT_NOTIFY"}]}"#);
        let err = validate(&p).unwrap_err().to_string();
        assert!(err.contains("linux.seccomp.syscalls") && err.contains("write"), "{err}");
    }
}
