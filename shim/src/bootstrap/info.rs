//! `-info` (containerd 2.x asks for it) and `-v`.

use myshim_protos::containerd::types::{RuntimeInfo, RuntimeVersion};
use prost::Message;

pub const RUNTIME_NAME: &str = "io.containerd.myshim.v1";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const FEATURES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// The encoded `RuntimeInfo`: name, version, the options read from stdin echoed back, and the OCI
/// features document (containerd 2.x refuses some specs without it).
pub fn runtime_info() -> Vec<u8> {
    let features = prost_types::Any {
        type_url: FEATURES_TYPE_URL.into(),
        value: serde_json::to_vec(&myshim_runtime::features::document()).unwrap_or_default(),
    };
    RuntimeInfo {
        name: RUNTIME_NAME.into(),
        version: Some(RuntimeVersion { version: VERSION.into(), revision: String::new() }),
        options: super::options_from_stdin(),
        features: Some(features),
        annotations: Default::default(),
    }
    .encode_to_vec()
}

pub fn version_text() -> String {
    format!("containerd-shim-myshim-v1:\n  Runtime: {RUNTIME_NAME}\n  Version: {VERSION}\n")
}
