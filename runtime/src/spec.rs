//! Reading and checking the bundle's `config.json` before anything is created, so that a bad spec
//! fails with the name of the offending field and leaves nothing behind.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

pub const CONFIG_FILE: &str = "config.json";

/// Reads `<bundle>/config.json`. Parse errors name the JSON path of the bad field.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join(CONFIG_FILE);
    let text = fs::read(&path).map_err(|e| Error::SpecFile {
        bundle: bundle.to_owned(),
        reason: format!("read {}: {e}", path.display()),
    })?;
    parse(&text).map_err(|reason| Error::SpecFile { bundle: bundle.to_owned(), reason })
}

/// Parses a spec from JSON; the error says where in the document it went wrong.
pub fn parse(json: &[u8]) -> std::result::Result<Spec, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("malformed json: {}", e.inner())
        } else {
            format!("field {path}: {}", e.inner())
        }
    })
}

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
    if namespace(spec, LinuxNamespaceType::Mount).is_none() {
        return Err(Error::spec("linux.namespaces", "a mount namespace is required"));
    }
    Ok(())
}

/// The spec's name for an enum value (`SCMP_ARCH_X86_64`, `RLIMIT_NOFILE`, `SCHED_FLAG_RECLAIM`).
pub(crate) fn spec_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The namespace entry of this type, if the spec lists one (`Some(None)` = a new namespace,
/// `Some(Some(path))` = join the namespace at `path`).
pub fn namespace(spec: &Spec, typ: LinuxNamespaceType) -> Option<Option<PathBuf>> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == typ)
        .map(|ns| ns.path().clone())
}

/// The container's root directory on the host: `root.path`, relative to the bundle unless absolute.
pub fn rootfs_path(bundle: &Path, spec: &Spec) -> PathBuf {
    let root = spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_else(|| "rootfs".into());
    if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_field() {
        let err = parse(br#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"bogus"}]}}"#).unwrap_err();
        assert!(err.contains("linux.namespaces[0].type"), "{err}");
        assert!(err.contains("bogus"), "{err}");
        let err = parse(b"{\"ociVersion\": ").unwrap_err();
        assert!(err.contains("EOF"), "{err}");
    }

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
