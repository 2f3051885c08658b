//! Which containerd is calling, and the `start` reply it accepts.
//!
//! 1.6 is recognisable by its environment (no `GRPC_ADDRESS`); 1.7 and 2.x look the same, so the shim
//! asks containerd's Version service on its gRPC socket.

use std::path::Path;
use std::time::Duration;

use myshim_protos::containerd::services::version::v1::version_client::VersionClient;

use crate::config::Protocol;
use crate::containerd_channel;

const VERSION_TIMEOUT: Duration = Duration::from_secs(2);

/// containerd's release, as far as the reply depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    pub major: u32,
    pub minor: u32,
}

/// What is known about the calling containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containerd {
    /// No `GRPC_ADDRESS` in the environment: 1.6 (or older).
    V1_6,
    Known(Release),
    Unknown,
}

impl Containerd {
    /// From a version string such as `1.7.24~ds1`, `v2.1.9` or `2.1.9+unknown`.
    pub fn from_version(version: &str) -> Containerd {
        let mut parts = version.trim().trim_start_matches('v').split(|c: char| !c.is_ascii_digit());
        match (parts.next().and_then(|p| p.parse().ok()), parts.next().and_then(|p| p.parse().ok())) {
            (Some(major), Some(minor)) => Containerd::Known(Release { major, minor }),
            _ => Containerd::Unknown,
        }
    }

    fn release(self) -> Option<Release> {
        match self {
            Containerd::V1_6 => Some(Release { major: 1, minor: 6 }),
            Containerd::Known(release) => Some(release),
            Containerd::Unknown => None,
        }
    }

    /// 2.x gets JSON version 3 replies (task API v3, sandbox grouping); 1.x gets version 2 or plain.
    pub fn speaks_v3(self) -> bool {
        self.release().is_some_and(|r| r.major >= 2)
    }
}

/// Which containerd releases can hold a shim over gRPC, and why not where they cannot. Measured on
/// Debian's builds (see docs/grpc.md); a containerd release that fixes its connection watcher gets an
/// entry here and thereby gRPC.
const GRPC_SHIM_SUPPORT: &[(Release, Release, Result<(), &str>)] = &[
    (Release { major: 0, minor: 0 }, Release { major: 1, minor: 7 }, Err("containerd before 1.7 only speaks ttrpc to shims")),
    (Release { major: 1, minor: 7 }, Release { major: 2, minor: 0 }, Ok(())),
    (
        Release { major: 2, minor: 0 },
        Release { major: u32::MAX, minor: u32::MAX },
        Err("containerd 2.x declares a gRPC shim dead as soon as its new connection is idle (grpcDialContext watches the IDLE state of a grpc.NewClient channel)"),
    ),
];

/// Whether this containerd can hold a gRPC shim; the error says why not.
pub fn grpc_support(containerd: Containerd) -> Result<(), String> {
    let release = containerd.release().ok_or("the containerd version is unknown")?;
    GRPC_SHIM_SUPPORT
        .iter()
        .find(|(from, until, _)| *from <= release && release < *until)
        .map(|(_, _, support)| support.map_err(str::to_owned))
        .unwrap_or_else(|| Err(format!("containerd {}.{} is not in the table of gRPC-capable releases", release.major, release.minor)))
}

/// Finds out which containerd runs `start`: from the environment, else by asking it.
pub fn detect(address: &str) -> Containerd {
    if std::env::var_os("GRPC_ADDRESS").is_none() {
        return Containerd::V1_6;
    }
    match query_version(address) {
        Ok(version) => Containerd::from_version(&version),
        Err(e) => {
            tracing::warn!(address, error = %e, "cannot ask containerd for its version; answering as to an unknown version");
            Containerd::Unknown
        }
    }
}

/// containerd's version string, from its gRPC Version service at `address` (a unix socket path).
pub fn query_version(address: &str) -> Result<String, String> {
    // A single-threaded runtime: `start` forks the daemon afterwards and must not have threads.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let channel = containerd_channel::connect(Path::new(address), Some(VERSION_TIMEOUT)).await?;
        let reply = tokio::time::timeout(VERSION_TIMEOUT, VersionClient::new(channel).version(()))
            .await
            .map_err(|_| format!("{address}: no version reply within {VERSION_TIMEOUT:?}"))?
            .map_err(|e| format!("{address}: {}", e.message()))?;
        Ok(reply.into_inner().version)
    })
}

/// What `start` answers and writes, and the protocol the daemon serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub protocol: Protocol,
    /// Printed on stdout.
    pub reply: String,
    /// Written to `<bundle>/address`, if anything.
    pub address_file: Option<String>,
    /// Why a requested gRPC became ttrpc.
    pub fallback_reason: Option<String>,
}

/// The reply for a daemon on `socket` speaking `wanted` to `containerd`:
///
/// | containerd | ttrpc | gRPC |
/// |---|---|---|
/// | 1.6, unknown | plain `unix://` address | (ttrpc) |
/// | 1.7 | plain `unix://` address | `{"version":2,"address":"<path>","protocol":"grpc"}`, also in `address` |
/// | 2.x | `{"version":3,…"protocol":"ttrpc"}`, `address` = plain | (ttrpc until a fixed release; then version 3 gRPC) |
pub fn bootstrap(containerd: Containerd, wanted: Protocol, socket: &Path) -> Bootstrap {
    let ttrpc_address = format!("unix://{}", socket.display());
    let fallback_reason = match wanted {
        Protocol::Grpc => grpc_support(containerd).err(),
        Protocol::Ttrpc => None,
    };
    let protocol = if fallback_reason.is_none() { wanted } else { Protocol::Ttrpc };
    let version = if containerd.speaks_v3() { 3 } else { 2 };
    let (reply, address_file) = match (protocol, containerd.speaks_v3()) {
        (Protocol::Ttrpc, false) => (ttrpc_address.clone(), Some(ttrpc_address)),
        (Protocol::Ttrpc, true) => {
            (serde_json::json!({ "version": 3, "address": ttrpc_address, "protocol": "ttrpc" }).to_string(), Some(ttrpc_address))
        }
        // gRPC addresses are bare paths: containerd pre-dials them with net.Dial("unix", address).
        (Protocol::Grpc, v3) => {
            let reply = serde_json::json!({ "version": version, "address": socket.display().to_string(), "protocol": "grpc" }).to_string();
            // 1.7 re-reads the reply from `address` after a restart; 2.x keeps bootstrap.json and reads
            // `address` only as a plain ttrpc address, so it gets none.
            let file = (!v3).then(|| reply.clone());
            (reply, file)
        }
    };
    Bootstrap { protocol, reply, address_file, fallback_reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(major: u32, minor: u32) -> Containerd {
        Containerd::Known(Release { major, minor })
    }

    #[test]
    fn versions_parse() {
        assert_eq!(Containerd::from_version("1.7.24~ds1"), release(1, 7));
        assert_eq!(Containerd::from_version("v2.1.9"), release(2, 1));
        assert_eq!(Containerd::from_version("2.1.9+unknown"), release(2, 1));
        assert_eq!(Containerd::from_version("garbage"), Containerd::Unknown);
    }

    #[test]
    fn grpc_only_where_containerd_holds_it() {
        assert!(grpc_support(release(1, 7)).is_ok());
        assert!(grpc_support(Containerd::V1_6).unwrap_err().contains("ttrpc"));
        assert!(grpc_support(release(2, 1)).unwrap_err().contains("idle"));
        assert!(grpc_support(Containerd::Unknown).is_err());
    }

    #[test]
    fn replies_per_containerd_and_protocol() {
        let socket = Path::new("/run/containerd/s/abc");
        let plain = "unix:///run/containerd/s/abc";
        let b = bootstrap(Containerd::V1_6, Protocol::Grpc, socket);
        assert_eq!((b.protocol, b.reply.as_str()), (Protocol::Ttrpc, plain));
        assert!(b.fallback_reason.is_some());

        let b = bootstrap(release(1, 7), Protocol::Grpc, socket);
        let json: serde_json::Value = serde_json::from_str(&b.reply).unwrap();
        assert_eq!((json["version"].as_u64(), json["protocol"].as_str(), json["address"].as_str()), (Some(2), Some("grpc"), Some("/run/containerd/s/abc")));
        assert_eq!(b.address_file.as_deref(), Some(b.reply.as_str()));

        let b = bootstrap(release(2, 1), Protocol::Ttrpc, socket);
        let json: serde_json::Value = serde_json::from_str(&b.reply).unwrap();
        assert_eq!((json["version"].as_u64(), json["protocol"].as_str(), json["address"].as_str()), (Some(3), Some("ttrpc"), Some(plain)));
        assert_eq!(b.address_file.as_deref(), Some(plain));

        let b = bootstrap(release(2, 1), Protocol::Grpc, socket);
        assert_eq!(b.protocol, Protocol::Ttrpc);
        assert!(b.reply.contains("\"version\":3") && b.fallback_reason.unwrap().contains("2.x"));
    }
}
