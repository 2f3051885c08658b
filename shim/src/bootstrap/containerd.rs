//! Which containerd is calling, and the `start` reply it accepts.
//!
//! 1.6 is recognisable by its environment (no `GRPC_ADDRESS`); 1.7 and 2.x look the same, so the shim
//! asks containerd's Version service on its gRPC socket.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use myshim_protos::containerd::services::version::v1::version_client::VersionClient;
use tonic::transport::{Endpoint, Uri};

const VERSION_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// containerd 1.6: plain ttrpc address replies only, task API v2.
    V1_6,
    /// containerd 1.7: JSON replies with version 2 (ttrpc or gRPC), task API v2 (v3 over gRPC).
    V1_7,
    /// containerd 2.x: JSON replies with version 3, task API v3, sandbox grouping.
    V2,
    Unknown,
}

impl Generation {
    /// From a version string such as `1.7.24~ds1`, `v2.1.9` or `2.1.9+unknown`.
    pub fn from_version(version: &str) -> Generation {
        let mut parts = version.trim().trim_start_matches('v').split(|c: char| !c.is_ascii_digit());
        match (parts.next().and_then(|p| p.parse::<u32>().ok()), parts.next().and_then(|p| p.parse::<u32>().ok())) {
            (Some(1), Some(minor)) if minor <= 6 => Generation::V1_6,
            (Some(1), Some(_)) => Generation::V1_7,
            (Some(major), _) if major >= 2 => Generation::V2,
            _ => Generation::Unknown,
        }
    }
}

/// Finds out which containerd runs `start`: from the environment, else by asking it.
pub fn detect(address: &str) -> Generation {
    if std::env::var_os("GRPC_ADDRESS").is_none() {
        return Generation::V1_6;
    }
    match query_version(address) {
        Ok(version) => Generation::from_version(&version),
        Err(e) => {
            tracing::warn!(address, error = %e, "cannot ask containerd for its version; answering as to an unknown version");
            Generation::Unknown
        }
    }
}

/// containerd's version string, from its gRPC Version service at `address` (a unix socket path).
pub fn query_version(address: &str) -> Result<String, String> {
    // A single-threaded runtime: `start` forks the daemon afterwards and must not have threads.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let path = Path::new(address).to_owned();
        let channel = Endpoint::from_static("http://containerd")
            .connect_timeout(VERSION_TIMEOUT)
            .timeout(VERSION_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let reply = tokio::time::timeout(VERSION_TIMEOUT, VersionClient::new(channel).version(()))
            .await
            .map_err(|_| format!("{address}: no version reply within {VERSION_TIMEOUT:?}"))?
            .map_err(|e| format!("{address}: {}", e.message()))?;
        Ok(reply.into_inner().version)
    })
}

/// The reply to print from `start` for a ttrpc daemon on `socket`.
pub fn ttrpc_reply(generation: Generation, socket: &Path) -> String {
    let address = format!("unix://{}", socket.display());
    match generation {
        // Version 3 gets task API v3 and containerd's own grouping of a pod's containers.
        Generation::V2 => serde_json::json!({ "version": 3, "address": address, "protocol": "ttrpc" }).to_string(),
        Generation::V1_6 | Generation::V1_7 | Generation::Unknown => address,
    }
}

/// What to write into `<bundle>/address`: 1.6 and 1.7 re-read the reply from it after a restart; 2.x
/// keeps `bootstrap.json` itself and reads `address` only as a plain ttrpc address.
pub fn address_file(generation: Generation, reply: &str, socket: &Path) -> String {
    match generation {
        Generation::V2 => format!("unix://{}", socket.display()),
        _ => reply.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_generations() {
        assert_eq!(Generation::from_version("1.6.20~ds1"), Generation::V1_6);
        assert_eq!(Generation::from_version("1.7.24~ds1"), Generation::V1_7);
        assert_eq!(Generation::from_version("v2.1.9"), Generation::V2);
        assert_eq!(Generation::from_version("2.1.9+unknown"), Generation::V2);
        assert_eq!(Generation::from_version("garbage"), Generation::Unknown);
    }

    #[test]
    fn replies_per_generation() {
        let socket = Path::new("/run/containerd/s/abc");
        assert_eq!(ttrpc_reply(Generation::V1_6, socket), "unix:///run/containerd/s/abc");
        let v3: serde_json::Value = serde_json::from_str(&ttrpc_reply(Generation::V2, socket)).unwrap();
        assert_eq!(v3["version"], 3);
        assert_eq!(v3["protocol"], "ttrpc");
        assert_eq!(v3["address"], "unix:///run/containerd/s/abc");
        assert_eq!(address_file(Generation::V2, "{json}", socket), "unix:///run/containerd/s/abc");
    }
}
