//! `linux.sysctl`: which keys a container may set, and setting them.
//!
//! A sysctl written from inside the container changes the kernel for everyone who shares the
//! namespace it belongs to. So, as runc does, only keys of a namespace the container has to itself
//! are accepted: IPC (`kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`) with a private IPC
//! namespace, `net.*` with a network namespace that is not the runtime's, `kernel.domainname` with a
//! private UTS namespace, `user.*` with a user namespace. Everything else (`kernel.core_pattern`,
//! `vm.*`, …) is refused at create, naming the key. Keys are names, never paths: components are
//! checked, and the file is opened below a verified procfs without following symlinks.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};
use crate::rootfs::procfs::Procfs;
use crate::spec;

const IPC_KEYS: &[&str] = &["kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"];

/// A sysctl key in its dotted form, and the file below `/proc/sys` that holds it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Key {
    pub dotted: String,
    pub path: PathBuf,
}

fn refuse(key: &str, reason: impl Into<String>) -> Error {
    Error::spec(format!("linux.sysctl.{key}"), reason)
}

/// Parses a key as sysctl(8) does: dots separate names, unless the first separator is a slash, in
/// which case slashes separate and dots belong to names (`net/ipv4/conf/eth0.100/rp_filter`).
pub(crate) fn parse(key: &str) -> Result<Key> {
    let slash_form = key.find(['.', '/']).is_some_and(|i| key.as_bytes()[i] == b'/');
    let dotted: String = if slash_form {
        key.chars().map(|c| match c {
            '.' => '/',
            '/' => '.',
            other => other,
        }).collect()
    } else {
        key.to_owned()
    };
    let mut path = PathBuf::new();
    for name in dotted.split('.') {
        // In the dotted form a name may hold '/', which stands for a '.' of the file name.
        let file = name.replace('/', ".");
        if file.is_empty() || file == "." || file == ".." || file.contains('\0') {
            return Err(refuse(key, "not a sysctl name (empty, '.' or '..' components)"));
        }
        path.push(file);
    }
    Ok(Key { dotted, path })
}

/// Whether the namespace of `typ` the container gets is the runtime's own (not listed, or joined by
/// a path that leads to ours).
fn shares_ours(spec: &Spec, typ: LinuxNamespaceType, proc_name: &str) -> Result<bool> {
    match spec::namespace(spec, typ) {
        None => Ok(true),
        Some(None) => Ok(false),
        Some(Some(path)) => {
            let theirs = std::fs::metadata(&path).map_err(|e| Error::io(format!("linux.namespaces: stat {}", path.display()), e))?;
            let ours = std::fs::metadata(format!("/proc/self/ns/{proc_name}")).map_err(|e| Error::io(format!("stat /proc/self/ns/{proc_name}"), e))?;
            use std::os::unix::fs::MetadataExt;
            Ok((theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()))
        }
    }
}

/// Checks every key of the spec's `linux.sysctl` before anything is created.
pub(crate) fn validate(spec: &Spec) -> Result<()> {
    let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else { return Ok(()) };
    for (raw, value) in sysctls {
        let key = parse(raw)?;
        if value.contains('\0') {
            return Err(refuse(raw, "the value contains NUL"));
        }
        let name = key.dotted.as_str();
        let has = |typ| spec::namespace(spec, typ).is_some();
        let refusal = if IPC_KEYS.contains(&name) || name.starts_with("fs.mqueue.") {
            (!has(LinuxNamespaceType::Ipc)).then_some("is not allowed in the host's ipc namespace (the spec has no ipc namespace)")
        } else if name.starts_with("net.") {
            shares_ours(spec, LinuxNamespaceType::Network, "net")?.then_some("is not allowed in the host's network namespace")
        } else if name == "kernel.hostname" && has(LinuxNamespaceType::Uts) {
            Some("conflicts with the spec's hostname field: set that instead")
        } else if (name == "kernel.domainname" && has(LinuxNamespaceType::Uts)) || (name.starts_with("user.") && has(LinuxNamespaceType::User)) {
            None
        } else {
            Some("is not in a separate kernel namespace: setting it would change the host")
        };
        if let Some(reason) = refusal {
            return Err(refuse(raw, reason));
        }
    }
    Ok(())
}

/// Writes the spec's sysctls through the container's procfs (the keys were validated at create).
pub(crate) fn write_all(spec: &Spec, procfs: &Procfs) -> Result<()> {
    let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else { return Ok(()) };
    for (raw, value) in sysctls {
        let key = parse(raw)?;
        procfs.write(&PathBuf::from("sys").join(&key.path), value).map_err(|e| e.prefixed(&format!("linux.sysctl.{raw}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_names_never_paths() {
        assert_eq!(parse("net.ipv4.ip_forward").unwrap().path, PathBuf::from("net/ipv4/ip_forward"));
        let vlan = parse("net/ipv4/conf/eno2.100/rp_filter").unwrap();
        assert_eq!(vlan.dotted, "net.ipv4.conf.eno2/100.rp_filter");
        assert_eq!(vlan.path, PathBuf::from("net/ipv4/conf/eno2.100/rp_filter"));
        for bad in ["/tmp/owned", "net..x", "..", "kernel.", "", "net/../../../etc/passwd", "a\0b"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    fn spec_with(namespaces: &str, sysctl: &str) -> Spec {
        crate::spec::parse(format!(r#"{{"ociVersion":"1.0.2","linux":{{"namespaces":[{namespaces}],"sysctl":{{{sysctl}}}}}}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn only_namespaced_keys_pass() {
        let private = r#"{"type":"mount"},{"type":"ipc"},{"type":"network"},{"type":"uts"}"#;
        validate(&spec_with(private, r#""kernel.shmmax":"1","fs.mqueue.msg_max":"10","net.ipv4.ip_forward":"1","kernel.domainname":"x""#)).unwrap();
        for (key, reason) in [
            ("kernel.core_pattern", "not in a separate kernel namespace"),
            ("kernel.printk_ratelimit", "not in a separate kernel namespace"),
            ("/tmp/owned", "not a sysctl name"),
            ("kernel.hostname", "hostname field"),
        ] {
            let err = validate(&spec_with(private, &format!(r#""{key}":"1""#))).unwrap_err().to_string();
            assert!(err.contains(&format!("linux.sysctl.{key}")) && err.contains(reason), "{err}");
        }
        let shared = r#"{"type":"mount"}"#;
        assert!(validate(&spec_with(shared, r#""net.ipv4.ip_forward":"1""#)).unwrap_err().to_string().contains("host's network namespace"));
        assert!(validate(&spec_with(shared, r#""kernel.shmmax":"1""#)).unwrap_err().to_string().contains("host's ipc namespace"));
        let joined_ours = r#"{"type":"mount"},{"type":"network","path":"/proc/self/ns/net"}"#;
        assert!(validate(&spec_with(joined_ours, r#""net.ipv4.ip_forward":"1""#)).is_err());
    }
}
