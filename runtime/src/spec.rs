//! Reading the bundle's `config.json`, and the small lookups every part of the runtime makes in a
//! spec. This module depends on no other part of the runtime (checking a spec is [`crate::validate`]).

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

}
