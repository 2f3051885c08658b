//! A CRI client (runtime.v1 over gRPC, generated in this project) that speaks to containerd's CRI
//! plugin exactly as kubelet does. Calls block: each runs on a small runtime of its own.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use myshim_protos::runtime::v1 as cri;
use myshim_protos::runtime::v1::image_service_client::ImageServiceClient;
use myshim_protos::runtime::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::api::unix_channel;

pub use myshim_protos::runtime::v1;

pub struct Cri {
    tokio: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    pub fn connect(socket: &Path) -> Cri {
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let channel = tokio.block_on(unix_channel(socket)).expect("connect to containerd's CRI socket");
        Cri { tokio, runtime: RuntimeServiceClient::new(channel.clone()), images: ImageServiceClient::new(channel) }
    }

    fn call<T, F>(&self, f: impl FnOnce(RuntimeServiceClient<Channel>) -> F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.tokio.block_on(f(self.runtime.clone())).map(tonic::Response::into_inner)
    }

    pub fn run_pod(&self, config: &cri::PodSandboxConfig, handler: &str) -> Result<String, tonic::Status> {
        let request = cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.into() };
        self.call(|mut c| async move { c.run_pod_sandbox(request).await }).map(|r| r.pod_sandbox_id)
    }

    pub fn pod_status(&self, id: &str) -> Result<cri::PodSandboxStatus, tonic::Status> {
        let request = cri::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
        self.call(|mut c| async move { c.pod_sandbox_status(request).await }).map(|r| r.status.unwrap_or_default())
    }

    pub fn stop_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let request = cri::StopPodSandboxRequest { pod_sandbox_id: id.into() };
        self.call(|mut c| async move { c.stop_pod_sandbox(request).await }).map(drop)
    }

    pub fn remove_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let request = cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        self.call(|mut c| async move { c.remove_pod_sandbox(request).await }).map(drop)
    }

    pub fn list_pods(&self) -> Result<Vec<cri::PodSandbox>, tonic::Status> {
        self.call(|mut c| async move { c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await }).map(|r| r.items)
    }

    pub fn create_container(&self, pod: &str, config: &cri::ContainerConfig, pod_config: &cri::PodSandboxConfig) -> Result<String, tonic::Status> {
        let request = cri::CreateContainerRequest { pod_sandbox_id: pod.into(), config: Some(config.clone()), sandbox_config: Some(pod_config.clone()) };
        self.call(|mut c| async move { c.create_container(request).await }).map(|r| r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let request = cri::StartContainerRequest { container_id: id.into() };
        self.call(|mut c| async move { c.start_container(request).await }).map(drop)
    }

    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        let request = cri::StopContainerRequest { container_id: id.into(), timeout };
        self.call(|mut c| async move { c.stop_container(request).await }).map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), tonic::Status> {
        let request = cri::RemoveContainerRequest { container_id: id.into() };
        self.call(|mut c| async move { c.remove_container(request).await }).map(drop)
    }

    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, tonic::Status> {
        let request = cri::ContainerStatusRequest { container_id: id.into(), verbose: false };
        self.call(|mut c| async move { c.container_status(request).await }).map(|r| r.status.unwrap_or_default())
    }

    pub fn list_containers(&self) -> Result<Vec<cri::Container>, tonic::Status> {
        self.call(|mut c| async move { c.list_containers(cri::ListContainersRequest { filter: None }).await }).map(|r| r.containers)
    }

    /// ExecSync: (exit code, stdout, stderr).
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> Result<(i32, String, String), tonic::Status> {
        let request = cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 30 };
        self.call(|mut c| async move { c.exec_sync(request).await })
            .map(|r| (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned(), String::from_utf8_lossy(&r.stderr).into_owned()))
    }

    pub fn container_stats(&self, id: &str) -> Result<cri::ContainerStats, tonic::Status> {
        let request = cri::ContainerStatsRequest { container_id: id.into() };
        self.call(|mut c| async move { c.container_stats(request).await }).map(|r| r.stats.unwrap_or_default())
    }

    pub fn update_resources(&self, id: &str, resources: cri::LinuxContainerResources) -> Result<(), tonic::Status> {
        let request = cri::UpdateContainerResourcesRequest { container_id: id.into(), linux: Some(resources), annotations: HashMap::new() };
        self.call(|mut c| async move { c.update_container_resources(request).await }).map(drop)
    }

    /// Kubernetes' container checkpoint: the archive is written to `location`.
    pub fn checkpoint_container(&self, id: &str, location: &Path) -> Result<(), tonic::Status> {
        let request = cri::CheckpointContainerRequest { container_id: id.into(), location: location.display().to_string(), timeout: 0 };
        self.call(|mut c| async move { c.checkpoint_container(request).await }).map(drop)
    }

    /// The runtime handlers containerd reports, with the features it found for each.
    pub fn runtime_handlers(&self) -> Result<Vec<cri::RuntimeHandler>, tonic::Status> {
        self.call(|mut c| async move { c.status(cri::StatusRequest { verbose: false }).await }).map(|r| r.runtime_handlers)
    }

    pub fn image_present(&self, image: &str) -> Result<bool, tonic::Status> {
        let request = cri::ImageStatusRequest { image: Some(cri::ImageSpec { image: image.into(), annotations: HashMap::new() }), verbose: false };
        let mut images = self.images.clone();
        self.tokio.block_on(images.image_status(request)).map(|r| r.into_inner().image.is_some())
    }
}

/// A pod like kubelet describes one: a unique uid, a log directory, a cgroup parent.
pub fn pod_config(name: &str, log_directory: &Path, cgroup_parent: &str, host_network: bool) -> cri::PodSandboxConfig {
    let uid = format!("{name}-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos());
    let mode = if host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), uid, namespace: "default".into(), attempt: 0 }),
        // A pod on the host's network must not set a hostname.
        hostname: if host_network { String::new() } else { name.into() },
        log_directory: log_directory.display().to_string(),
        dns_config: None,
        labels: HashMap::from([("app".to_owned(), name.to_owned())]),
        annotations: HashMap::new(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption { network: mode as i32, pid: cri::NamespaceMode::Container as i32, ipc: cri::NamespaceMode::Pod as i32, target_id: String::new() }),
                ..Default::default()
            }),
            sysctls: HashMap::new(),
        }),
    }
}

/// A container of `image` running `command`, logging to `<log_directory>/<name>.log`.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: image.into(), annotations: HashMap::new() }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig { resources: None, security_context: Some(cri::LinuxContainerSecurityContext::default()) }),
        ..Default::default()
    }
}
