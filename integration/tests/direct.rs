//! The shim without containerd: bootstrapped by `start` against a fake containerd and driven over its
//! socket (the harness the hostile-input tests and the benchmarks use).

use std::time::Duration;

use myshim_integration::bundle;
use myshim_integration::direct::{DirectShim, Protocol, ShimOptions};

/// Create, start, wait and delete of a container, with its events in order.
fn lifecycle(shim: &DirectShim) {
    let mut client = shim.client();
    let bundle_dir = shim.bundle_dir("life");
    bundle::write(&bundle_dir, &bundle::default_spec(&["sh", "-c", "exit 7"], &shim.cgroup_path("life")));
    let pid = client.create("life", &bundle_dir, ["", "", ""]).unwrap();
    assert!(pid > 0);
    client.start("life", "").unwrap();
    assert_eq!(client.wait("life", "").unwrap(), 7);
    assert_eq!(client.delete("life", "").unwrap(), 7);
    assert!(shim.fake.wait_for("life", "/tasks/delete", Duration::from_secs(10)), "{:?}", shim.fake.events());
    assert_eq!(shim.fake.topics_of("life"), ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
    assert!(!bundle_dir.join("myshim-state").exists(), "state removed at delete");
}

#[test]
fn lifecycle_over_ttrpc() {
    lifecycle(&DirectShim::start("life-ttrpc", Protocol::Ttrpc));
}

#[test]
fn lifecycle_over_grpc() {
    lifecycle(&DirectShim::start("life-grpc", Protocol::Grpc));
}

/// Without `TTRPC_ADDRESS` the shim forwards events to containerd's gRPC Events service.
#[test]
fn events_fall_back_to_grpc_forward() {
    lifecycle(&DirectShim::start_with("grpc-events", ShimOptions { protocol: Protocol::Ttrpc, ttrpc_events: false }));
}
