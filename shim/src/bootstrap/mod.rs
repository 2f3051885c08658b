//! What containerd runs the shim binary for, besides serving: `start` (launch or reuse a daemon and
//! tell containerd where it listens), `delete` (clean up after a container whose daemon may be gone),
//! `-info` and `-v`.

pub mod containerd;
pub mod delete;
pub mod info;
pub mod start;

use std::io::Read;
use std::path::{Path, PathBuf};

use prost::Message;

use sha2::{Digest, Sha256};

/// Where every shim socket lives: containerd's compiled-in default, shared by all instances.
pub const SOCKET_DIR: &str = "/run/containerd/s";

/// Annotations that put containers into one shim process (a pod), in order of precedence.
const GROUP_ANNOTATIONS: &[&str] = &["io.containerd.myshim.v1.group", "io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"];

/// The socket for a group: `/run/containerd/s/<sha256 of address/namespace/group>`, as containerd's own
/// shims name theirs.
pub fn socket_path(address: &str, namespace: &str, group: &str) -> PathBuf {
    let joined = Path::new(address).join(namespace).join(group);
    let digest = Sha256::digest(joined.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SOCKET_DIR).join(hex)
}

/// The group a container belongs to: from its spec's annotations, else its own id.
pub fn group_id(bundle: &Path, id: &str) -> String {
    let annotations = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
        .and_then(|spec| spec.get("annotations").cloned());
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|key| annotations.as_ref()?.get(key)?.as_str().filter(|v| !v.is_empty()).map(str::to_owned))
        .unwrap_or_else(|| id.to_owned())
}

/// What `start` remembers about a running daemon, beside its socket.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DaemonRecord {
    pub pid: u32,
    /// containerd's gRPC address and namespace the daemon serves (for operators and leak checks).
    pub address: String,
    pub namespace: String,
    /// The reply containerd accepted when this daemon was started, and what went into `address`; a
    /// later `start` for the same group echoes them, so protocol and version always match the
    /// running daemon.
    pub reply: String,
    pub address_file: Option<String>,
}

pub fn record_path(socket: &Path) -> PathBuf {
    socket.with_extension("myshim.json")
}

impl DaemonRecord {
    /// The record of the daemon listening on `socket`, if there is one.
    pub fn load(socket: &Path) -> Option<DaemonRecord> {
        std::fs::read(record_path(socket)).ok().and_then(|text| serde_json::from_slice(&text).ok())
    }

    /// Writes the record beside `socket`, readable by root alone, atomically (a `start` reading it
    /// at the same moment sees all of it or nothing).
    pub fn save(&self, socket: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = record_path(socket);
        let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).with_context(|| format!("create {}", temporary.display()))?;
            file.write_all(&serde_json::to_vec(self)?).with_context(|| format!("write {}", temporary.display()))?;
            std::fs::rename(&temporary, &path).with_context(|| format!("rename {} to {}", temporary.display(), path.display()))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }
}

/// The runtime options containerd writes to `start`'s and `-info`'s stdin, if any. All of stdin is
/// read, so containerd's write never blocks.
pub fn options_from_stdin() -> Option<prost_types::Any> {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    prost_types::Any::decode(stdin.as_slice()).ok().filter(|a| !a.type_url.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_is_stable_and_short() {
        let a = socket_path("/run/containerd/containerd.sock", "default", "c1");
        assert_eq!(a, socket_path("/run/containerd/containerd.sock", "default", "c1"));
        assert_ne!(a, socket_path("/run/containerd/containerd.sock", "other", "c1"));
        assert!(a.as_os_str().len() < 108);
        assert!(a.starts_with(SOCKET_DIR));
    }

    #[test]
    fn group_comes_from_annotations() {
        let dir = std::env::temp_dir().join(format!("myshim-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#).unwrap();
        assert_eq!(group_id(&dir, "c1"), "pod1");
        std::fs::write(dir.join("config.json"), r#"{"annotations":{}}"#).unwrap();
        assert_eq!(group_id(&dir, "c1"), "c1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
