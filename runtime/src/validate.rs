//! Checking a spec before anything is created, so that a bad spec fails with the name of the
//! offending field and leaves nothing behind. Each part of the runtime that gives a field its meaning
//! (seccomp, the process's labels, sysctls) checks its own fields; this module asks each of them.

use std::collections::HashSet;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};
use crate::spec::namespace;

/// Checks what the runtime relies on before it creates anything.
pub fn validate(spec: &Spec) -> Result<()> {
    let process = spec.process().as_ref().ok_or_else(|| Error::spec("process", "missing"))?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(Error::spec("process.args", "must name the program to run")),
    }
    if !process.cwd().is_absolute() {
        return Err(Error::spec("process.cwd", format!("{:?} is not an absolute path", process.cwd())));
    }
    crate::process::check_labels(process)?;
    let root = spec.root().as_ref().ok_or_else(|| Error::spec("root", "missing"))?;
    if root.path().as_os_str().is_empty() {
        return Err(Error::spec("root.path", "must not be empty"));
    }
    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        if !mount.destination().is_absolute() {
            return Err(Error::spec(
                format!("mounts[{i}].destination"),
                format!("{:?} is not an absolute path", mount.destination()),
            ));
        }
    }

    let linux = spec.linux().as_ref();
    if let Some(profile) = linux.and_then(|l| l.seccomp().as_ref()) {
        crate::seccomp::validate(profile)?;
    }
    crate::sysctl::validate(spec)?;
    for (i, device) in linux.and_then(|l| l.devices().as_ref()).into_iter().flatten().enumerate() {
        if !device.path().is_absolute() {
            return Err(Error::spec(format!("linux.devices[{i}].path"), format!("{:?} is not an absolute path", device.path())));
        }
        if device.major() < 0 || device.minor() < 0 {
            return Err(Error::spec(format!("linux.devices[{i}]"), format!("{}: device numbers must not be negative", device.path().display())));
        }
    }
    if let Some(resources) = linux.and_then(|l| l.resources().as_ref()) {
        crate::cgroups::check_resources(resources)?;
    }
    let mut seen = HashSet::new();
    for ns in linux.and_then(|l| l.namespaces().as_ref()).into_iter().flatten() {
        if !seen.insert(ns.typ()) {
            return Err(Error::spec("linux.namespaces", format!("namespace {} listed twice", ns.typ())));
        }
        if let Some(path) = ns.path() {
            if !path.is_absolute() {
                return Err(Error::spec(
                    format!("linux.namespaces[{}].path", ns.typ()),
                    format!("{path:?} is not an absolute path"),
                ));
            }
        }
    }
    let has_maps = linux.is_some_and(|l| l.uid_mappings().as_ref().is_some_and(|m| !m.is_empty()) || l.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()));
    match namespace(spec, LinuxNamespaceType::User) {
        Some(None) => {
            let complete = linux.is_some_and(|l| {
                l.uid_mappings().as_ref().is_some_and(|m| m.iter().any(|m| m.container_id() == 0))
                    && l.gid_mappings().as_ref().is_some_and(|m| m.iter().any(|m| m.container_id() == 0))
            });
            if !complete {
                return Err(Error::spec("linux.uidMappings", "a new user namespace needs uid and gid mappings that map the container's root (id 0)"));
            }
        }
        Some(Some(_)) if has_maps => return Err(Error::spec("linux.uidMappings", "mappings cannot be given for a user namespace joined by path")),
        None if has_maps => return Err(Error::spec("linux.uidMappings", "mappings need a user namespace")),
        _ => {}
    }
    let private_uts = namespace(spec, LinuxNamespaceType::Uts).is_some();
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !private_uts {
        return Err(Error::spec("hostname", "setting a hostname needs a uts namespace"));
    }
    // Without a mount namespace the container shares the runtime's mounts (runc allows it): nothing
    // may be masked, made read-only or propagated there, which would change the host's view.
    if namespace(spec, LinuxNamespaceType::Mount).is_none() {
        let restricted = [
            ("linux.maskedPaths", linux.and_then(|l| l.masked_paths().as_ref()).is_some_and(|p| !p.is_empty())),
            ("linux.readonlyPaths", linux.and_then(|l| l.readonly_paths().as_ref()).is_some_and(|p| !p.is_empty())),
            ("linux.rootfsPropagation", linux.and_then(|l| l.rootfs_propagation().as_ref()).is_some_and(|p| !p.is_empty())),
            ("root.readonly", root.readonly() == Some(true)),
        ];
        if let Some((field, _)) = restricted.iter().find(|(_, set)| *set) {
            return Err(Error::spec(*field, "needs a mount namespace of the container's own (the spec has none: it would change the host's mounts)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse;

    #[test]
    fn validation_names_missing_args() {
        let spec = parse(br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","user":{"uid":0,"gid":0},"args":[]},"linux":{"namespaces":[{"type":"mount"}]}}"#).unwrap();
        let err = validate(&spec).unwrap_err().to_string();
        assert_eq!(err, "invalid spec: process.args: must name the program to run");
    }

    #[test]
    fn hostname_needs_uts_namespace() {
        let spec = parse(br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"hostname":"h","process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"]},"linux":{"namespaces":[{"type":"mount"}]}}"#).unwrap();
        assert!(validate(&spec).unwrap_err().to_string().contains("uts namespace"));
    }
}
