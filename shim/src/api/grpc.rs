//! The gRPC transport (tonic, HTTP/2 without TLS on the shim's unix socket): `containerd.task.v3.Task`
//! over the same task functions as the ttrpc transport. Each method decodes nothing itself (tonic
//! does), calls [`super::task`], and maps errors through [`super::status`].

use std::sync::Arc;

use myshim_protos::containerd::task::v3 as task;
use myshim_protos::containerd::task::v3::task_server::Task;
use tonic::{Request, Response, Status};

use super::status::to_grpc;
use super::task as rpc;
use crate::core::TaskCore;

pub use myshim_protos::containerd::task::v3::task_server::TaskServer;

pub struct GrpcTask(pub Arc<TaskCore>);

/// The trait impl: one method per RPC, each a call of the shared task function. (The whole impl is
/// generated so that `async_trait` sees the expanded methods.)
macro_rules! rpcs {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        #[tonic::async_trait]
        impl Task for GrpcTask {
            $(
                async fn $method(&self, request: Request<$request>) -> Result<Response<$response>, Status> {
                    rpc::$method(&self.0, request.into_inner()).await.map(Response::new).map_err(|e| to_grpc(&e))
                }
            )*
        }
    };
}

rpcs! {
    state(task::StateRequest) -> task::StateResponse;
    create(task::CreateTaskRequest) -> task::CreateTaskResponse;
    start(task::StartRequest) -> task::StartResponse;
    delete(task::DeleteRequest) -> task::DeleteResponse;
    pids(task::PidsRequest) -> task::PidsResponse;
    pause(task::PauseRequest) -> ();
    resume(task::ResumeRequest) -> ();
    checkpoint(task::CheckpointTaskRequest) -> ();
    kill(task::KillRequest) -> ();
    exec(task::ExecProcessRequest) -> ();
    resize_pty(task::ResizePtyRequest) -> ();
    close_io(task::CloseIoRequest) -> ();
    update(task::UpdateTaskRequest) -> ();
    wait(task::WaitRequest) -> task::WaitResponse;
    stats(task::StatsRequest) -> task::StatsResponse;
    connect(task::ConnectRequest) -> task::ConnectResponse;
    shutdown(task::ShutdownRequest) -> ();
}
