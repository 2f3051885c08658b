//! The gRPC transport: used where containerd can hold it (1.7), refused with a reason where it cannot
//! (2.1 falls back to ttrpc), survives a containerd restart, and shrugs off bad input.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use myshim_integration::api::unix_channel;
use myshim_integration::containerd::RUNTIME;
use myshim_integration::{image, leaks, Containerd, Version};
use myshim_protos::containerd::task::v3 as task;
use myshim_protos::containerd::task::v3::task_client::TaskClient;

const GRPC: &str = "protocol = \"grpc\"\n";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The socket a container's shim serves, from its `address` file (JSON reply or plain address).
fn shim_socket(c: &Containerd, id: &str) -> (String, PathBuf) {
    let address = std::fs::read_to_string(c.bundle(id).join("address")).unwrap();
    let path = match serde_json::from_str::<serde_json::Value>(&address) {
        Ok(json) => json["address"].as_str().unwrap().to_owned(),
        Err(_) => address.trim_start_matches("unix://").to_owned(),
    };
    (address, PathBuf::from(path))
}

fn connect_over_grpc(socket: &Path, id: &str) -> Result<task::ConnectResponse, String> {
    runtime().block_on(async {
        let channel = unix_channel(socket).await.map_err(|e| e.to_string())?;
        let mut client = TaskClient::new(channel);
        client.connect(task::ConnectRequest { id: id.into() }).await.map(|r| r.into_inner()).map_err(|e| e.to_string())
    })
}

#[test]
fn containerd_1_7_gets_a_grpc_shim() {
    let c = Containerd::start_with(Version::V1_7, "grpc-used", Some(GRPC));
    c.run_detached("g", &["sleep", "1000"]);
    let (address, socket) = shim_socket(&c, "g");
    let reply: serde_json::Value = serde_json::from_str(&address).expect("1.7 gets the JSON reply in its address file");
    assert_eq!(reply["protocol"], "grpc");
    assert_eq!(reply["version"], 2);
    assert!(reply["address"].as_str().unwrap().starts_with("/run/containerd/s/"), "a bare path: {reply}");
    let connected = connect_over_grpc(&socket, "g").expect("a gRPC call answered on the shim's socket");
    let shims = leaks::shim_processes(&c);
    assert_eq!(connected.shim_pid, shims[0].0);
    assert!(connected.task_pid > 0);
    c.remove("g");
    c.assert_no_leftovers();
}

#[test]
fn containerd_2_1_falls_back_to_ttrpc_with_a_reason() {
    let c = Containerd::start_with(Version::V2_1, "grpc-fallback", Some(GRPC));
    c.run_detached("f", &["sleep", "1000"]);
    let (address, socket) = shim_socket(&c, "f");
    assert!(address.starts_with("unix:///run/containerd/s/"), "a ttrpc address: {address}");
    assert!(connect_over_grpc(&socket, "f").is_err(), "the socket does not speak gRPC");
    let warnings = c.log_lines("serves ttrpc");
    assert_eq!(warnings.len(), 1, "one warning line: {warnings:?}");
    assert!(warnings[0].contains("idle"), "names the reason: {}", warnings[0]);
    c.remove("f");
    c.assert_no_leftovers();
}

#[test]
fn grpc_container_survives_a_containerd_restart() {
    let mut c = Containerd::start_with(Version::V1_7, "grpc-restart", Some(GRPC));
    c.run_detached("r", &["sleep", "1000"]);
    c.stop();
    c.restart();
    assert_eq!(c.task_status("r").as_deref(), Some("RUNNING"));
    let out = c.ctr(&["task", "exec", "--exec-id", "after", "r", "echo", "still here"]).ok();
    assert_eq!(out.stdout, "still here\n");
    c.remove("r");
    c.assert_no_leftovers();
}

#[test]
fn bad_input_on_the_grpc_socket() {
    let c = Containerd::start_with(Version::V1_7, "grpc-bad", Some(GRPC));
    c.run_detached("b", &["sleep", "1000"]);
    let (_, socket) = shim_socket(&c, "b");

    // Garbage bytes: the connection is dropped, nothing else happens.
    let mut raw = UnixStream::connect(&socket).unwrap();
    let _ = raw.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(4096));
    drop(raw);

    runtime().block_on(async {
        let channel = unix_channel(&socket).await.unwrap();
        // An unknown service and method.
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/no.such.Service/Nothing");
        let unknown: Result<tonic::Response<()>, _> =
            grpc.unary(tonic::Request::new(()), path, tonic_prost::ProstCodec::<(), ()>::default()).await;
        assert_eq!(unknown.unwrap_err().code(), tonic::Code::Unimplemented);
        // A message over the 4 MiB limit.
        let mut client = TaskClient::new(channel.clone());
        let huge = task::StateRequest { id: "x".repeat(5 << 20), exec_id: String::new() };
        let oversized = client.state(huge).await.unwrap_err();
        assert!(matches!(oversized.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{oversized:?}");
        // A well-formed request for a container that does not exist.
        let missing = client.state(task::StateRequest { id: "nope".into(), exec_id: String::new() }).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert!(missing.message().contains("nope"));
        // The shim still serves.
        let state = client.state(task::StateRequest { id: "b".into(), exec_id: String::new() }).await.unwrap().into_inner();
        assert_eq!(state.status, 2, "RUNNING");
    });
    let out = c.ctr(&["task", "exec", "--exec-id", "ok", "b", "echo", "alive"]).ok();
    assert_eq!(out.stdout, "alive\n");
    c.remove("b");
    c.assert_no_leftovers();
}

#[test]
fn malformed_configuration_is_an_error_from_start() {
    let c = Containerd::start_with(Version::V2_1, "badconfig", Some("protocol = \n"));
    c.track("m");
    let out = c.ctr(&["run", "--runtime", RUNTIME, "--rm", image::BUSYBOX, "m", "true"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("myshim.toml"), "names the file: {}", out.stderr);
    std::thread::sleep(Duration::from_millis(300));
    c.assert_no_leftovers();
}
