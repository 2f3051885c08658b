//! Keeps containerd 1.7's gRPC connection to this shim busy, so containerd never declares it dead.
//!
//! containerd dials gRPC shims with grpc-go's defaults, whose channel goes idle after 30 minutes
//! without a call in flight; containerd's connection watcher takes that for a dead shim, runs the
//! shim's `delete` and drops the task. A call in flight prevents it, and the shim can cause one: for
//! each running container it asks containerd's own Tasks API to `Wait` on it, which containerd
//! forwards to the shim as a `Wait` that stays open until the container exits (re-issued if
//! containerd restarts meanwhile).

use std::path::{Path, PathBuf};
use std::time::Duration;

use myshim_protos::containerd::services::tasks::v1::{tasks_client::TasksClient, WaitRequest};
use tokio::sync::broadcast::error::RecvError;
use tonic::metadata::MetadataValue;
use tracing::{debug, info};

use crate::containerd_channel;
use crate::core::events::EventQueue;
use crate::core::types::TaskEvent;

const RETRY: Duration = Duration::from_secs(1);

/// Starts a waiter for every container that starts from now on.
pub fn start(events: &EventQueue, containerd_address: String, namespace: String) {
    let mut observed = events.observe();
    tokio::spawn(async move {
        loop {
            match observed.recv().await {
                Ok(TaskEvent::Start { container_id, .. }) => {
                    tokio::spawn(wait_through_containerd(PathBuf::from(&containerd_address), namespace.clone(), container_id));
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// Holds `Tasks.Wait(container)` open at containerd until the container exits.
async fn wait_through_containerd(address: PathBuf, namespace: String, container_id: String) {
    info!(id = %container_id, "keeping containerd's gRPC connection busy with a Wait");
    loop {
        match wait_once(&address, &namespace, &container_id).await {
            Ok(()) => return,
            // The container is gone (NotFound) or containerd restarts: ask again until it answers.
            Err(status) if status.code() == tonic::Code::NotFound => return,
            Err(status) => {
                debug!(id = %container_id, error = %status.message(), "keepalive Wait interrupted; asking again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn wait_once(address: &Path, namespace: &str, container_id: &str) -> Result<(), tonic::Status> {
    let channel = containerd_channel::connect(address, None).await.map_err(tonic::Status::unavailable)?;
    let mut request = tonic::Request::new(WaitRequest { container_id: container_id.to_owned(), exec_id: String::new() });
    let namespace = MetadataValue::try_from(namespace).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    request.metadata_mut().insert("containerd-namespace", namespace);
    TasksClient::new(channel).wait(request).await.map(drop)
}
