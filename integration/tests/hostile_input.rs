//! Hostile input on the shim's socket, each answered with a clear error while the shim keeps serving
//! a bystander container: malformed ttrpc frames and HTTP/2 streams, unknown services and methods,
//! malformed payloads, ids meant as paths, broken bundles and stdio that does not exist.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;

use myshim_integration::bundle;
use myshim_integration::direct::{DirectShim, Protocol, ShimClient, TASK_SERVICE_V2};
use myshim_integration::ttrpc::{Header, TtrpcClient, MAX_PAYLOAD, MESSAGE_REQUEST};
use myshim_integration::{leaks, paths};
use myshim_protos::containerd::task::v3 as task;
use myshim_protos::ttrpc::Request;
use prost::Message;

const INVALID_ARGUMENT: i32 = 3;
const NOT_FOUND: i32 = 5;
const UNIMPLEMENTED: i32 = 12;
const INTERNAL: i32 = 13;

/// A shim with one running container that every test checks is still served at the end.
fn shim_with_bystander(name: &str, protocol: Protocol) -> DirectShim {
    let shim = DirectShim::start(name, protocol);
    let bundle_dir = shim.bundle_dir("bystander");
    bundle::write(&bundle_dir, &bundle::default_spec(&["sleep", "1000"], &shim.cgroup_path("bystander")));
    let mut client = shim.client();
    client.create("bystander", &bundle_dir, ["", "", ""]).unwrap();
    client.start("bystander", "").unwrap();
    shim
}

/// The shim is alive, the bystander runs and a new exec in it works.
fn assert_still_serving(shim: &DirectShim) {
    assert!(shim.alive(), "the shim died; log:\n{}", shim.log());
    let mut client = shim.client();
    let state = client.state("bystander", "").unwrap();
    assert_eq!(state.status, 2, "bystander running");
    client.exec("bystander", "probe", ["", "", ""], &process(&["true"])).unwrap();
    client.start("bystander", "probe").unwrap();
    assert_eq!(client.wait("bystander", "probe").unwrap(), 0);
    client.delete("bystander", "probe").unwrap();
}

fn process(args: &[&str]) -> serde_json::Value {
    serde_json::json!({"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin:/sbin:/usr/bin"]})
}

/// Field 1 of every task request is a string; sending it as a number makes the payload undecodable.
#[derive(Clone, PartialEq, Message)]
struct WrongWireType {
    #[prost(uint64, tag = "1")]
    id: u64,
}

#[test]
fn malformed_ttrpc_frames() {
    let shim = shim_with_bystander("frames", Protocol::Ttrpc);

    let (_, rss_before) = shim.usage();
    // Garbage (its first bytes read as a 3.7 GB frame): no answer, nothing allocated for it.
    let mut garbage = TtrpcClient::connect(&shim.socket).unwrap();
    garbage.send_raw(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00].repeat(1000)).unwrap();

    // A truncated frame, left hanging: other clients are served meanwhile; closing it is harmless.
    let mut truncated = UnixStream::connect(&shim.socket).unwrap();
    truncated.write_all(&Header { length: 100, stream: 1, kind: MESSAGE_REQUEST, flags: 0 }.encode()).unwrap();
    truncated.write_all(&[0u8; 10]).unwrap();
    assert_still_serving(&shim);
    drop(truncated);
    drop(garbage);

    // An oversized frame (over ttrpc's 4 MiB): read past in small pieces and refused.
    let mut oversized = TtrpcClient::connect(&shim.socket).unwrap();
    let refused = oversized.round_trip(&vec![0u8; MAX_PAYLOAD + 1]).unwrap();
    let status = refused.status.unwrap();
    assert_eq!(status.code, INVALID_ARGUMENT, "{status:?}");
    assert!(status.message.contains("exceed"), "{status:?}");
    let (_, rss_after) = shim.usage();
    assert!(rss_after < rss_before + 4096, "garbage and oversized frames cost memory: {rss_before} KiB → {rss_after} KiB");

    // A frame of an unknown message type.
    let mut unknown_type = TtrpcClient::connect(&shim.socket).unwrap();
    unknown_type.send_raw(&Header { length: 4, stream: 1, kind: 0x7f, flags: 0 }.encode()).unwrap();
    unknown_type.send_raw(b"junk").unwrap();
    drop(unknown_type);

    let mut client = TtrpcClient::connect(&shim.socket).unwrap();
    // A frame whose payload is not a ttrpc request.
    let answer = client.round_trip(&[0xff; 32]);
    assert!(answer.is_err() || answer.as_ref().is_ok_and(|r| r.status.as_ref().is_some_and(|s| s.code != 0)), "{answer:?}");

    // Unknown services and methods.
    let mut client = TtrpcClient::connect(&shim.socket).unwrap();
    let unknown_service = client.call::<_, ()>("no.such.Service", "Nothing", &()).unwrap_err();
    // The ttrpc crate answers INVALID_ARGUMENT here (Go's ttrpc: UNIMPLEMENTED); both name the service.
    assert_eq!(unknown_service.code, INVALID_ARGUMENT, "{unknown_service}");
    assert!(unknown_service.message.contains("no.such.Service"), "{unknown_service}");
    let unknown_method = client.call::<_, ()>(TASK_SERVICE_V2, "Teleport", &()).unwrap_err();
    assert_eq!(unknown_method.code, UNIMPLEMENTED, "{unknown_method}");
    assert!(unknown_method.message.contains("Teleport"), "{unknown_method}");

    // A payload that does not decode as the method's request.
    let malformed = client.call::<_, ()>(TASK_SERVICE_V2, "State", &WrongWireType { id: 7 }).unwrap_err();
    assert_eq!(malformed.code, INVALID_ARGUMENT, "{malformed}");
    assert!(malformed.message.contains("State") && malformed.message.contains("malformed"), "{malformed}");

    // A request envelope with metadata and a timeout, but for a container that does not exist.
    let request = Request {
        service: TASK_SERVICE_V2.into(),
        method: "State".into(),
        payload: task::StateRequest { id: "ghost".into(), exec_id: String::new() }.encode_to_vec(),
        timeout_nano: 1_000_000_000,
        metadata: vec![myshim_protos::ttrpc::KeyValue { key: "x".repeat(4096), value: "y".repeat(4096) }],
    };
    let ghost = client.round_trip(&request.encode_to_vec()).unwrap();
    let status = ghost.status.unwrap();
    assert_eq!(status.code, NOT_FOUND);
    assert!(status.message.contains("ghost"), "{}", status.message);

    assert_still_serving(&shim);
}

#[test]
fn malformed_http2_streams() {
    let shim = shim_with_bystander("http2", Protocol::Grpc);
    // The HTTP/2 preface, then half a frame header, then gone.
    let mut truncated = UnixStream::connect(&shim.socket).unwrap();
    truncated.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00").unwrap();
    drop(truncated);
    // The preface, then a frame claiming 16 MiB.
    let mut oversized = UnixStream::connect(&shim.socket).unwrap();
    oversized.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x00\x00\x00\x00\x00\x00").unwrap();
    let _ = oversized.write_all(&[0u8; 64 << 10]);
    drop(oversized);
    // A gRPC request whose body does not decode: INTERNAL, as grpc-go answers it, naming the field.
    let mut client = shim.client();
    let malformed = client.call::<_, ()>("State", &WrongWireType { id: 7 }).unwrap_err();
    assert_eq!(malformed.code, INTERNAL, "{malformed:?}");
    assert!(malformed.message.contains("StateRequest.id"), "{malformed:?}");
    assert_still_serving(&shim);
}

/// Container and exec ids that are paths, NUL bytes or absurdly long are refused, on both transports,
/// before anything is made from them.
fn ids_are_not_paths(protocol: Protocol) {
    let shim = shim_with_bystander(&format!("ids-{protocol:?}").to_lowercase(), protocol);
    let mut client = shim.client();
    let bundle_dir = shim.bundle_dir("victim");
    bundle::write(&bundle_dir, &bundle::default_spec(&["true"], &shim.cgroup_path("victim")));
    let long = "a".repeat(5000);
    let hostile = ["../../escape", "a/b", "..", ".", "x\0y", "", long.as_str(), "tab\there", "/abs"];
    for id in hostile {
        let error = client.create(id, &bundle_dir, ["", "", ""]).unwrap_err();
        assert_eq!(error.code, INVALID_ARGUMENT, "create {id:?}: {error:?}");
        assert!(error.message.contains("id"), "names the id: {error:?}");
        let error = client.exec("bystander", id, ["", "", ""], &process(&["true"])).unwrap_err();
        assert_eq!(error.code, INVALID_ARGUMENT, "exec {id:?}: {error:?}");
        assert!(error.message.contains("exec id"), "names the exec id: {error:?}");
    }
    assert!(!bundle_dir.join("../../escape").exists() && !bundle_dir.join("myshim-state").exists(), "nothing made from a hostile id");
    // A bundle that is not an absolute path, or does not exist.
    let relative = client.call::<_, task::CreateTaskResponse>("Create", &task::CreateTaskRequest { id: "rel".into(), bundle: "bundles/rel".into(), ..Default::default() }).unwrap_err();
    assert_eq!(relative.code, INVALID_ARGUMENT, "{relative:?}");
    let missing = client.create("missing", Path::new("/nonexistent/bundle"), ["", "", ""]).unwrap_err();
    assert!(missing.message.contains("/nonexistent/bundle"), "{missing:?}");
    assert_still_serving(&shim);
}

#[test]
fn ids_are_not_paths_over_ttrpc() {
    ids_are_not_paths(Protocol::Ttrpc);
}

#[test]
fn ids_are_not_paths_over_grpc() {
    ids_are_not_paths(Protocol::Grpc);
}

/// Creates `id` from `spec` (after `edit`) and returns the error, checking nothing of it is left.
fn refused(shim: &DirectShim, client: &mut ShimClient, id: &str, args: &[&str], edit: impl FnOnce(&mut serde_json::Value), stdio: [&str; 3]) -> String {
    let bundle_dir = shim.bundle_dir(id);
    let mut spec = bundle::default_spec(args, &shim.cgroup_path(id));
    edit(&mut spec);
    bundle::write(&bundle_dir, &spec);
    let error = client.create(id, &bundle_dir, stdio).expect_err("create succeeded");
    assert_eq!(client.state(id, "").unwrap_err().code, NOT_FOUND, "{id} half-made");
    assert!(!bundle_dir.join("myshim-state").exists(), "{id}: state left behind");
    assert!(leaks::mounts_under(&bundle_dir).is_empty(), "{id}: mounts left behind");
    assert!(leaks::cgroup_dirs(&shim.namespace).iter().all(|d| !d.join(id).exists()), "{id}: cgroup left behind");
    error.message
}

#[test]
fn broken_bundles_and_stdio() {
    let shim = shim_with_bystander("bundles", Protocol::Ttrpc);
    let mut client = shim.client();

    let message = refused(&shim, &mut client, "badtype", &["true"], |s| s["process"]["args"] = "true".into(), ["", "", ""]);
    assert!(message.contains("process.args"), "{message}");

    let message = refused(&shim, &mut client, "badmount", &["true"], |s| {
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/data", "type": "myshimfs", "source": "none"}))
    }, ["", "", ""]);
    assert!(message.contains("/data") && message.contains("myshimfs"), "{message}");

    let message = refused(&shim, &mut client, "nosource", &["true"], |s| {
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/data", "type": "bind", "source": "/nonexistent/source", "options": ["rbind"]}))
    }, ["", "", ""]);
    assert!(message.contains("/nonexistent/source"), "{message}");

    // Failures inside the container's init, after the clone, fail Create itself (runc reports them
    // at create): soft above hard, and a limit above what the kernel allows (fs.nr_open).
    let message = refused(&shim, &mut client, "softhard", &["true"], |s| {
        s["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}])
    }, ["", "", ""]);
    assert!(message.contains("process.rlimits"), "{message}");
    let message = refused(&shim, &mut client, "overnropen", &["true"], |s| {
        s["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 1u64 << 40, "hard": 1u64 << 40}])
    }, ["", "", ""]);
    assert!(message.contains("RLIMIT_NOFILE"), "{message}");

    let message = refused(&shim, &mut client, "nostdio", &["true"], |_| {}, ["", "/nonexistent/dir/stdout", ""]);
    assert!(message.contains("/nonexistent/dir/stdout"), "{message}");

    let bundle_dir = shim.bundle_dir("notjson");
    std::fs::write(bundle_dir.join("config.json"), "{\"ociVersion\": ").unwrap();
    let error = client.create("notjson", &bundle_dir, ["", "", ""]).unwrap_err();
    assert!(error.message.contains("config.json"), "{error:?}");

    // A device the host has no driver for: the node is made (as runc does) and opening it fails
    // inside the container, where nothing of the host is reached.
    let dir = paths::scratch("nodriver");
    let out = dir.join("out");
    std::fs::write(&out, "").unwrap();
    let bundle_dir = shim.bundle_dir("nodriver");
    let mut spec = bundle::default_spec(&["sh", "-c", "ls -l /dev/nodriver > /out 2>&1; cat /dev/nodriver >> /out 2>&1; true"], &shim.cgroup_path("nodriver"));
    spec["linux"]["devices"] = serde_json::json!([{"path": "/dev/nodriver", "type": "c", "major": 511, "minor": 77, "fileMode": 438}]);
    spec["linux"]["resources"]["devices"].as_array_mut().unwrap().push(serde_json::json!({"allow": true, "type": "c", "major": 511, "minor": 77, "access": "rwm"}));
    spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/out", "type": "bind", "source": out, "options": ["rbind"]}));
    bundle::write(&bundle_dir, &spec);
    client.create("nodriver", &bundle_dir, ["", "", ""]).unwrap();
    client.start("nodriver", "").unwrap();
    assert_eq!(client.wait("nodriver", "").unwrap(), 0);
    client.delete("nodriver", "").unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("511,") && text.contains("No such device"), "{text}");

    assert_still_serving(&shim);
}
