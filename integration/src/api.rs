//! containerd's own gRPC Tasks API, for what `ctr` has no verb for (Update, ResizePty, CloseIO, Exec
//! with fifos the test owns). Calls block: each runs on a small runtime of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use myshim_protos::containerd::services::tasks::v1 as tasks;
use myshim_protos::containerd::services::tasks::v1::tasks_client::TasksClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};

pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
pub const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

pub struct TasksApi {
    runtime: tokio::runtime::Runtime,
    client: TasksClient<Channel>,
    namespace: String,
}

/// A JSON document in an `Any` (containerd's way of passing OCI objects).
pub fn json_any(type_url: &str, value: &serde_json::Value) -> prost_types::Any {
    prost_types::Any { type_url: type_url.into(), value: value.to_string().into_bytes() }
}

/// An HTTP/2 (gRPC) channel over a unix socket.
pub async fn unix_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket: PathBuf = socket.to_owned();
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        // Generous (kubelet allows two minutes): under the guest lane's software emulation a pod's
        // sandbox, network included, has taken more than ten seconds on a busy host.
        .timeout(Duration::from_secs(60))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
}

impl TasksApi {
    pub fn connect(socket: &Path, namespace: &str) -> TasksApi {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let channel = runtime.block_on(unix_channel(socket)).expect("connect to containerd's gRPC socket");
        TasksApi { runtime, client: TasksClient::new(channel), namespace: namespace.to_owned() }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("containerd-namespace", MetadataValue::try_from(self.namespace.as_str()).unwrap());
        request
    }

    pub fn exec(&self, container: &str, exec_id: &str, stdio: [&str; 3], terminal: bool, process: serde_json::Value) -> Result<(), tonic::Status> {
        let request = self.request(tasks::ExecProcessRequest {
            container_id: container.into(),
            exec_id: exec_id.into(),
            stdin: stdio[0].into(),
            stdout: stdio[1].into(),
            stderr: stdio[2].into(),
            terminal,
            spec: Some(json_any(PROCESS_TYPE_URL, &process)),
        });
        let mut client = self.client.clone();
        self.runtime.block_on(client.exec(request)).map(drop)
    }

    pub fn start(&self, container: &str, exec_id: &str) -> Result<u32, tonic::Status> {
        let request = self.request(tasks::StartRequest { container_id: container.into(), exec_id: exec_id.into() });
        let mut client = self.client.clone();
        self.runtime.block_on(client.start(request)).map(|r| r.into_inner().pid)
    }

    pub fn wait(&self, container: &str, exec_id: &str) -> Result<u32, tonic::Status> {
        let request = self.request(tasks::WaitRequest { container_id: container.into(), exec_id: exec_id.into() });
        let mut client = self.client.clone();
        self.runtime.block_on(client.wait(request)).map(|r| r.into_inner().exit_status)
    }

    pub fn delete_process(&self, container: &str, exec_id: &str) -> Result<u32, tonic::Status> {
        let request = self.request(tasks::DeleteProcessRequest { container_id: container.into(), exec_id: exec_id.into() });
        let mut client = self.client.clone();
        self.runtime.block_on(client.delete_process(request)).map(|r| r.into_inner().exit_status)
    }

    pub fn kill(&self, container: &str, exec_id: &str, signal: u32) -> Result<(), tonic::Status> {
        let request = self.request(tasks::KillRequest { container_id: container.into(), exec_id: exec_id.into(), signal, all: false });
        let mut client = self.client.clone();
        self.runtime.block_on(client.kill(request)).map(drop)
    }

    pub fn resize_pty(&self, container: &str, exec_id: &str, width: u32, height: u32) -> Result<(), tonic::Status> {
        let request = self.request(tasks::ResizePtyRequest { container_id: container.into(), exec_id: exec_id.into(), width, height });
        let mut client = self.client.clone();
        self.runtime.block_on(client.resize_pty(request)).map(drop)
    }

    pub fn close_stdin(&self, container: &str, exec_id: &str) -> Result<(), tonic::Status> {
        let request = self.request(tasks::CloseIoRequest { container_id: container.into(), exec_id: exec_id.into(), stdin: true });
        let mut client = self.client.clone();
        self.runtime.block_on(client.close_io(request)).map(drop)
    }

    /// Checkpoints the task with runc's checkpoint options (what containerd's clients send).
    pub fn checkpoint(&self, container: &str, options: &myshim_protos::containerd::runc::v1::CheckpointOptions) -> Result<(), tonic::Status> {
        let request = self.request(tasks::CheckpointTaskRequest { container_id: container.into(), parent_checkpoint: String::new(), options: Some(myshim_protos::to_any(options)) });
        let mut client = self.client.clone();
        self.runtime.block_on(client.checkpoint(request)).map(drop)
    }

    pub fn update(&self, container: &str, resources: serde_json::Value) -> Result<(), tonic::Status> {
        let request = self.request(tasks::UpdateTaskRequest {
            container_id: container.into(),
            resources: Some(json_any(RESOURCES_TYPE_URL, &resources)),
            annotations: Default::default(),
        });
        let mut client = self.client.clone();
        self.runtime.block_on(client.update(request)).map(drop)
    }
}

/// A fifo a test creates for a process's stream (the shim never creates them).
pub fn make_fifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}
