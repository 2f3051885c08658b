//! Generates the wire types from `proto/`: prost messages for every file, tonic service code for the
//! gRPC services (the task v3 server the shim serves, the clients it and the tests use). protox parses
//! the files in pure Rust, so no `protoc` has to be installed.

use std::path::Path;

const PROTO_ROOT: &str = "proto";

const FILES: &[&str] = &[
    "github.com/containerd/containerd/api/runtime/task/v2/shim.proto",
    "github.com/containerd/containerd/api/runtime/task/v3/shim.proto",
    "github.com/containerd/containerd/api/events/task.proto",
    "github.com/containerd/containerd/api/types/introspection.proto",
    "github.com/containerd/containerd/api/types/runc/options/oci.proto",
    "github.com/containerd/containerd/api/types/runtimeoptions/v1/api.proto",
    "github.com/containerd/containerd/api/services/ttrpc/events/v1/events.proto",
    "github.com/containerd/containerd/api/services/events/v1/events.proto",
    "github.com/containerd/containerd/api/services/version/v1/version.proto",
    "github.com/containerd/containerd/api/services/tasks/v1/tasks.proto",
    "github.com/containerd/cgroups/v3/cgroup1/stats/metrics.proto",
    "github.com/containerd/cgroups/v3/cgroup2/stats/metrics.proto",
    "k8s.io/cri-api/pkg/apis/runtime/v1/api.proto",
    "github.com/containerd/ttrpc/request.proto",
    "github.com/checkpoint-restore/criu/images/rpc.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let files: Vec<_> = FILES.iter().map(|f| Path::new(PROTO_ROOT).join(f)).collect();
    let descriptors = protox::compile(&files, [PROTO_ROOT])?;

    let mut config = prost_build::Config::new();
    // `prost::Name` gives every message its full proto name, which is what containerd expects as the
    // (bare) type URL of an `Any`.
    config.enable_type_names();
    config.include_file("protos.rs");

    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
