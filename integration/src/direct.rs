//! The shim driven directly, without containerd: a fake containerd answers what the shim asks of
//! containerd (its version over gRPC, and events over ttrpc `Events/Forward` or, without
//! `TTRPC_ADDRESS`, gRPC), the shim binary is bootstrapped with `start` the way containerd runs it, and
//! tests or benchmarks call its task API over ttrpc or gRPC.

use std::convert::Infallible;
use std::fs;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use myshim_protos::containerd::services::events::v1::events_server::{Events, EventsServer};
use myshim_protos::containerd::services::events::v1 as grpc_events;
use myshim_protos::containerd::services::events::ttrpc::v1::ForwardRequest;
use myshim_protos::containerd::services::version::v1::version_server::{Version, VersionServer};
use myshim_protos::containerd::services::version::v1::VersionResponse;
use myshim_protos::containerd::task::v3 as task;
use myshim_protos::ttrpc::{Request, Response, Status};
use prost::Message;
use tonic::transport::Channel;

use crate::ttrpc::{read_frame, write_frame, CallError, TtrpcClient, MESSAGE_RESPONSE};
use crate::{api, leaks, paths, procfs};

/// A received event: its topic and the container it is about.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: String,
    pub container: String,
}

/// Every task event starts with the container id as field 1.
#[derive(Clone, PartialEq, Message)]
struct ContainerIdOnly {
    #[prost(string, tag = "1")]
    container_id: String,
}

type Received = Arc<Mutex<Vec<Event>>>;

fn record(received: &Received, envelope: Option<myshim_protos::containerd::types::Envelope>) {
    if let Some(envelope) = envelope {
        let container = envelope.event.and_then(|any| ContainerIdOnly::decode(any.value.as_slice()).ok()).map(|m| m.container_id).unwrap_or_default();
        received.lock().unwrap().push(Event { topic: envelope.topic, container });
    }
}

/// containerd as far as a shim sees it: its gRPC socket (Version, Events) and its ttrpc socket
/// (Events/Forward).
pub struct FakeContainerd {
    pub dir: PathBuf,
    received: Received,
    stop: Arc<AtomicBool>,
    grpc_stop: Option<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl FakeContainerd {
    /// Answers as containerd `version` (which decides the shim's bootstrap reply).
    pub fn start(name: &str, version: &str) -> FakeContainerd {
        let dir = paths::scratch(&format!("fake-containerd-{name}")).into_path();
        let received = Received::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();

        let ttrpc_listener = UnixListener::bind(dir.join("containerd.sock.ttrpc")).expect("bind the fake ttrpc socket");
        {
            let (received, stop) = (received.clone(), stop.clone());
            threads.push(std::thread::spawn(move || serve_ttrpc_events(ttrpc_listener, received, stop)));
        }

        let grpc_socket = dir.join("containerd.sock");
        let (grpc_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = GrpcServices { version: VersionServer::new(FakeVersion(version.into())), events: EventsServer::new(FakeEvents(received.clone())) };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        threads.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&grpc_socket).expect("bind the fake gRPC socket");
                let _ = ready_tx.send(());
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .serve_with_incoming_shutdown(service, incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        }));
        ready_rx.recv().expect("the fake gRPC server started");
        FakeContainerd { dir, received, stop, grpc_stop: Some(grpc_stop), threads }
    }

    pub fn grpc_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn ttrpc_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock.ttrpc")
    }

    pub fn events(&self) -> Vec<Event> {
        self.received.lock().unwrap().clone()
    }

    /// Topics received for `container`, in order.
    pub fn topics_of(&self, container: &str) -> Vec<String> {
        self.events().into_iter().filter(|e| e.container == container).map(|e| e.topic).collect()
    }

    /// Waits until `topic` arrived for `container`.
    pub fn wait_for(&self, container: &str, topic: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.topics_of(container).iter().any(|t| t == topic) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for FakeContainerd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(self.ttrpc_socket());
        if let Some(stop) = self.grpc_stop.take() {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn serve_ttrpc_events(listener: UnixListener, received: Received, stop: Arc<AtomicBool>) {
    for connection in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut connection) = connection else { continue };
        let received = received.clone();
        std::thread::spawn(move || {
            while let Ok((header, payload)) = read_frame(&mut connection) {
                let status = match Request::decode(payload.as_slice()) {
                    Ok(request) if request.method == "Forward" => {
                        record(&received, ForwardRequest::decode(request.payload.as_slice()).ok().and_then(|f| f.envelope));
                        Status { code: 0, ..Default::default() }
                    }
                    Ok(request) => Status { code: 12, message: format!("{}/{} is not served here", request.service, request.method), details: vec![] },
                    Err(e) => Status { code: 3, message: format!("malformed request: {e}"), details: vec![] },
                };
                let response = Response { status: Some(status), payload: vec![] };
                if write_frame(&mut connection, header.stream, MESSAGE_RESPONSE, &response.encode_to_vec()).is_err() {
                    return;
                }
            }
        });
    }
}

struct FakeVersion(String);

#[tonic::async_trait]
impl Version for FakeVersion {
    async fn version(&self, _: tonic::Request<()>) -> Result<tonic::Response<VersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(VersionResponse { version: self.0.clone(), revision: "fake".into() }))
    }
}

struct FakeEvents(Received);

#[tonic::async_trait]
impl Events for FakeEvents {
    async fn publish(&self, _: tonic::Request<grpc_events::PublishRequest>) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::unimplemented("shims forward"))
    }

    async fn forward(&self, request: tonic::Request<grpc_events::ForwardRequest>) -> Result<tonic::Response<()>, tonic::Status> {
        record(&self.0, request.into_inner().envelope);
        Ok(tonic::Response::new(()))
    }

    type SubscribeStream = tokio_stream::Empty<Result<myshim_protos::containerd::types::Envelope, tonic::Status>>;

    async fn subscribe(&self, _: tonic::Request<grpc_events::SubscribeRequest>) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not a real containerd"))
    }
}

/// The Version and Events services on one socket (tonic's router would pull in axum).
#[derive(Clone)]
struct GrpcServices {
    version: VersionServer<FakeVersion>,
    events: EventsServer<FakeEvents>,
}

impl tonic::server::NamedService for GrpcServices {
    const NAME: &'static str = "containerd";
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl tower::Service<HttpRequest> for GrpcServices {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = tonic::codegen::BoxFuture<HttpResponse, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        if request.uri().path().starts_with("/containerd.services.version.v1.Version/") {
            self.version.call(request)
        } else {
            self.events.call(request)
        }
    }
}

/// The transport the shim serves its task API on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ttrpc,
    Grpc,
}

/// A shim daemon bootstrapped against a [`FakeContainerd`], and the containers tests made in it.
pub struct DirectShim {
    /// Dropped first: its fifo lives in the fake containerd's directory.
    log: ShimLog,
    pub fake: FakeContainerd,
    pub namespace: String,
    pub protocol: Protocol,
    /// The socket the daemon serves.
    pub socket: PathBuf,
    pub pid: u32,
    /// Where `start` ran (the first container's bundle, as for containerd).
    group_bundle: PathBuf,
}

/// The shim's log fifo (as containerd makes it) and what was read from it.
struct ShimLog {
    path: PathBuf,
    text: Arc<Mutex<String>>,
    closing: Arc<AtomicBool>,
}

impl ShimLog {
    fn open(path: &Path) -> ShimLog {
        api::make_fifo(path);
        // Read and write: the fifo never sees end-of-file, and the shim's non-blocking open finds a reader.
        let mut fifo = fs::OpenOptions::new().read(true).write(true).open(path).expect("open the log fifo");
        let text = Arc::new(Mutex::new(String::new()));
        let closing = Arc::new(AtomicBool::new(false));
        let (copy, stop) = (text.clone(), closing.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 8192];
            while let Ok(n) = fifo.read(&mut buffer) {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                copy.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        ShimLog { path: path.to_owned(), text, closing }
    }
}

impl Drop for ShimLog {
    fn drop(&mut self) {
        // Wakes the reader, which then sees it should stop.
        self.closing.store(true, Ordering::SeqCst);
        if let Ok(mut fifo) = fs::OpenOptions::new().write(true).open(&self.path) {
            use std::io::Write;
            let _ = fifo.write_all(b"\n");
        }
    }
}

/// Options for [`DirectShim::start_with`].
pub struct ShimOptions {
    pub protocol: Protocol,
    /// Events over ttrpc (`TTRPC_ADDRESS` set, as containerd does) or over gRPC.
    pub ttrpc_events: bool,
}

impl DirectShim {
    pub fn start(name: &str, protocol: Protocol) -> DirectShim {
        DirectShim::start_with(name, ShimOptions { protocol, ttrpc_events: true })
    }

    pub fn start_with(name: &str, options: ShimOptions) -> DirectShim {
        // 1.7 is where a gRPC shim is held; the ttrpc reply is the same for every 1.x.
        let fake = FakeContainerd::start(name, "1.7.24");
        let namespace = format!("myshim-direct-{}-{}", name.replace('_', "-"), std::process::id());
        let group_bundle = fake.dir.join("group");
        fs::create_dir_all(&group_bundle).unwrap();
        let log = ShimLog::open(&group_bundle.join("log"));
        let protocol_name = match options.protocol {
            Protocol::Ttrpc => "ttrpc",
            Protocol::Grpc => "grpc",
        };
        let config = fake.dir.join("myshim.toml");
        let criu = paths::criu_dir().join("criu");
        fs::write(&config, format!("protocol = \"{protocol_name}\"\ngrpc_keepalive = false\ncriu_path = {:?}\n", criu.display().to_string())).unwrap();
        let mut command = Command::new(paths::shim_binary());
        command
            .args(["-namespace", &namespace, "-id", "group", "-address"])
            .arg(fake.grpc_socket())
            .args(["-publish-binary", "/bin/false", "start"])
            .current_dir(&group_bundle)
            .env("MYSHIM_CONFIG", &config)
            // What containerd 1.7 tells its shims about itself.
            .env("GRPC_ADDRESS", fake.grpc_socket())
            .env("NAMESPACE", &namespace)
            .env_remove("TTRPC_ADDRESS")
            .stdin(Stdio::null());
        if options.ttrpc_events {
            command.env("TTRPC_ADDRESS", fake.ttrpc_socket());
        }
        let output = command.output().expect("run the shim's start");
        let reply = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(output.status.success(), "shim start failed: {reply} {}", String::from_utf8_lossy(&output.stderr));
        let address = match serde_json::from_str::<serde_json::Value>(&reply) {
            Ok(json) => json["address"].as_str().unwrap_or_default().to_owned(),
            Err(_) => reply,
        };
        let socket = PathBuf::from(address.trim_start_matches("unix://"));
        let record: serde_json::Value = serde_json::from_slice(&fs::read(format!("{}.myshim.json", socket.display())).expect("the daemon record")).unwrap();
        let pid = record["pid"].as_u64().expect("daemon pid") as u32;
        DirectShim { fake, namespace, protocol: options.protocol, socket, pid, group_bundle, log }
    }

    /// What the shim logged so far.
    pub fn log(&self) -> String {
        self.log.text.lock().unwrap().clone()
    }

    pub fn client(&self) -> ShimClient {
        ShimClient::connect(&self.socket, self.protocol)
    }

    /// A scratch bundle directory for container `id`, removed with the shim.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        let dir = self.fake.dir.join("bundles").join(id);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The cgroup path containers of this shim get (`/<namespace>/<id>`, like ctr's).
    pub fn cgroup_path(&self, id: &str) -> String {
        format!("/{}/{}", self.namespace, id)
    }

    pub fn usage(&self) -> (usize, u64) {
        procfs::usage(self.pid)
    }

    pub fn alive(&self) -> bool {
        procfs::alive(self.pid)
    }
}

impl Drop for DirectShim {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- shim log ---\n{}", self.log());
        }
        if self.alive() {
            if let Ok(mut client) = ShimClient::try_connect(&self.socket, self.protocol) {
                let _ = client.call::<_, ()>("Shutdown", &task::ShutdownRequest { id: "group".into(), now: true });
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.alive() {
                leaks::signal(self.pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        leaks::remove_containers(&self.namespace, &self.fake.dir);
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(format!("{}.myshim.json", self.socket.display()));
        let _ = fs::remove_dir_all(&self.group_bundle);
    }
}

/// A task API client over either transport, calling methods by name.
pub enum ShimClient {
    Ttrpc(TtrpcClient),
    Grpc { runtime: tokio::runtime::Runtime, channel: Channel },
}

pub const TASK_SERVICE_V2: &str = "containerd.task.v2.Task";
pub const TASK_SERVICE_V3: &str = "containerd.task.v3.Task";

impl ShimClient {
    pub fn connect(socket: &Path, protocol: Protocol) -> ShimClient {
        ShimClient::try_connect(socket, protocol).unwrap_or_else(|e| panic!("connect to the shim at {}: {e}", socket.display()))
    }

    pub fn try_connect(socket: &Path, protocol: Protocol) -> Result<ShimClient, String> {
        Ok(match protocol {
            Protocol::Ttrpc => ShimClient::Ttrpc(TtrpcClient::connect(socket).map_err(|e| e.to_string())?),
            Protocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
                let channel = runtime.block_on(api::unix_channel(socket)).map_err(|e| e.to_string())?;
                ShimClient::Grpc { runtime, channel }
            }
        })
    }

    /// Calls task method `method` (`Create`, `Start`, …).
    pub fn call<Req, Resp>(&mut self, method: &str, request: &Req) -> Result<Resp, CallError>
    where
        Req: Message + Clone + Send + 'static,
        Resp: Message + Default + Send + 'static,
    {
        match self {
            ShimClient::Ttrpc(client) => client.call(TASK_SERVICE_V2, method, request),
            ShimClient::Grpc { runtime, channel } => {
                let path = format!("/{TASK_SERVICE_V3}/{method}");
                let request = request.clone();
                let channel = channel.clone();
                runtime.block_on(async move {
                    let mut grpc = tonic::client::Grpc::new(channel);
                    grpc.ready().await.map_err(|e| CallError { code: -1, message: e.to_string() })?;
                    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path).unwrap();
                    grpc.unary(tonic::Request::new(request), path, tonic_prost::ProstCodec::<Req, Resp>::default())
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| CallError { code: s.code() as i32, message: s.message().to_owned() })
                })
            }
        }
    }

    pub fn create(&mut self, id: &str, bundle: &Path, stdio: [&str; 3]) -> Result<u32, CallError> {
        let request = task::CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            stdin: stdio[0].into(),
            stdout: stdio[1].into(),
            stderr: stdio[2].into(),
            ..Default::default()
        };
        self.call::<_, task::CreateTaskResponse>("Create", &request).map(|r| r.pid)
    }

    pub fn start(&mut self, id: &str, exec_id: &str) -> Result<u32, CallError> {
        self.call::<_, task::StartResponse>("Start", &task::StartRequest { id: id.into(), exec_id: exec_id.into() }).map(|r| r.pid)
    }

    pub fn wait(&mut self, id: &str, exec_id: &str) -> Result<u32, CallError> {
        self.call::<_, task::WaitResponse>("Wait", &task::WaitRequest { id: id.into(), exec_id: exec_id.into() }).map(|r| r.exit_status)
    }

    pub fn kill(&mut self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<(), CallError> {
        self.call::<_, ()>("Kill", &task::KillRequest { id: id.into(), exec_id: exec_id.into(), signal, all })
    }

    pub fn delete(&mut self, id: &str, exec_id: &str) -> Result<u32, CallError> {
        self.call::<_, task::DeleteResponse>("Delete", &task::DeleteRequest { id: id.into(), exec_id: exec_id.into() }).map(|r| r.exit_status)
    }

    pub fn state(&mut self, id: &str, exec_id: &str) -> Result<task::StateResponse, CallError> {
        self.call("State", &task::StateRequest { id: id.into(), exec_id: exec_id.into() })
    }

    pub fn exec(&mut self, id: &str, exec_id: &str, stdio: [&str; 3], process: &serde_json::Value) -> Result<(), CallError> {
        let request = task::ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            stdin: stdio[0].into(),
            stdout: stdio[1].into(),
            stderr: stdio[2].into(),
            terminal: false,
            spec: Some(api::json_any(api::PROCESS_TYPE_URL, process)),
        };
        self.call::<_, ()>("Exec", &request)
    }
}
