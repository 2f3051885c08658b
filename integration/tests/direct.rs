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

/// What `start` logs reaches the bundle's log fifo (its descriptor once collided with the listener
/// `start` hands the daemon as fd 3, and its lines were lost).
#[test]
fn start_logs_reach_the_log_fifo() {
    let shim = DirectShim::start("startlog", Protocol::Ttrpc);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !shim.log().contains("started shim daemon") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(shim.log().contains("started shim daemon"), "{}", shim.log());
}

/// containerd asked the grouped daemon to shut down while a container ran; the last Delete comes
/// while another container's Create is still in flight. The daemon stays for that container, serves
/// it, and exits once it is deleted.
#[test]
fn a_create_in_flight_keeps_a_daemon_that_was_asked_to_shut_down() {
    let shim = DirectShim::start("inflight", Protocol::Ttrpc);
    let mut client = shim.client();
    let first = shim.bundle_dir("first");
    bundle::write(&first, &bundle::default_spec(&["sleep", "1000"], &shim.cgroup_path("first")));
    client.create("first", &first, ["", "", ""]).unwrap();
    client.start("first", "").unwrap();
    client.call::<_, ()>("Shutdown", &myshim_protos::containerd::task::v3::ShutdownRequest { id: "first".into(), now: false }).unwrap();

    // The second container's Create takes a while: a createRuntime hook sleeps.
    let second = shim.bundle_dir("second");
    let mut spec = bundle::default_spec(&["sh", "-c", "exit 5"], &shim.cgroup_path("second"));
    spec["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "2"]}]});
    bundle::write(&second, &spec);
    let socket = shim.socket.clone();
    let creating = std::thread::spawn(move || {
        let mut client = myshim_integration::direct::ShimClient::connect(&socket, Protocol::Ttrpc);
        client.create("second", &second, ["", "", ""])
    });
    std::thread::sleep(Duration::from_millis(500));
    client.kill("first", "", 9, false).unwrap();
    client.wait("first", "").unwrap();
    client.delete("first", "").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(shim.alive(), "the daemon exited with a Create in flight");

    creating.join().unwrap().expect("the second container is created");
    let mut client = shim.client();
    client.start("second", "").unwrap();
    assert_eq!(client.wait("second", "").unwrap(), 5);
    client.delete("second", "").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while shim.alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!shim.alive(), "the shutdown containerd asked for was forgotten");
}
