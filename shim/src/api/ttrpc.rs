//! The ttrpc transport: one handler per task RPC, registered under both `containerd.task.v2.Task`
//! and `containerd.task.v3.Task`. A handler decodes the payload, calls [`super::task`], and encodes
//! the answer or the mapped error status.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use myshim_protos::containerd::task::v3 as task;
use ttrpc::proto::ResponseInit;
use ttrpc::r#async::{MethodHandler, Service, TtrpcContext};

use super::status::to_ttrpc;
use super::task as rpc;
use crate::core::error::{TaskError, TaskResult};
use crate::core::TaskCore;

pub const TASK_SERVICES: [&str; 2] = ["containerd.task.v2.Task", "containerd.task.v3.Task"];

struct Method<Req, Resp, F> {
    core: Arc<TaskCore>,
    call: F,
    _types: PhantomData<fn(Req) -> Resp>,
}

#[async_trait]
impl<Req, Resp, F, Fut> MethodHandler for Method<Req, Resp, F>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: Fn(Arc<TaskCore>, Req) -> Fut + Send + Sync,
    Fut: Future<Output = TaskResult<Resp>> + Send,
{
    async fn handler(&self, _ctx: TtrpcContext, request: ttrpc::Request) -> ttrpc::Result<ttrpc::Response> {
        let decoded = match Req::decode(request.payload.as_slice()) {
            Ok(decoded) => decoded,
            Err(e) => {
                let error = TaskError::invalid(format!("{}/{}: malformed request: {e}", request.service, request.method));
                return Ok(ttrpc::Response::init_status(to_ttrpc(&error)));
            }
        };
        Ok(match (self.call)(self.core.clone(), decoded).await {
            Ok(answer) => {
                let mut response = ttrpc::Response::init_status(ttrpc::get_status(ttrpc::Code::OK, ""));
                response.set_payload(answer.encode_to_vec());
                response
            }
            Err(error) => ttrpc::Response::init_status(to_ttrpc(&error)),
        })
    }
}

fn method<Req, Resp, F, Fut>(core: &Arc<TaskCore>, call: F) -> Box<dyn MethodHandler + Send + Sync>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: Fn(Arc<TaskCore>, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult<Resp>> + Send + 'static,
{
    Box::new(Method { core: core.clone(), call, _types: PhantomData })
}

/// The handler table of the task service.
fn task_methods(core: &Arc<TaskCore>) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    let mut m: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
    m.insert("Create".into(), method(core, |c, r: task::CreateTaskRequest| async move { rpc::create(&c, r).await }));
    m.insert("Start".into(), method(core, |c, r: task::StartRequest| async move { rpc::start(&c, r).await }));
    m.insert("Delete".into(), method(core, |c, r: task::DeleteRequest| async move { rpc::delete(&c, r).await }));
    m.insert("State".into(), method(core, |c, r: task::StateRequest| async move { rpc::state(&c, r).await }));
    m.insert("Wait".into(), method(core, |c, r: task::WaitRequest| async move { rpc::wait(&c, r).await }));
    m.insert("Kill".into(), method(core, |c, r: task::KillRequest| async move { rpc::kill(&c, r).await }));
    m.insert("CloseIO".into(), method(core, |c, r: task::CloseIoRequest| async move { rpc::close_io(&c, r).await }));
    m.insert("Pids".into(), method(core, |c, r: task::PidsRequest| async move { rpc::pids(&c, r).await }));
    m.insert("Connect".into(), method(core, |c, r: task::ConnectRequest| async move { rpc::connect(&c, r).await }));
    m.insert("Shutdown".into(), method(core, |c, r: task::ShutdownRequest| async move { rpc::shutdown(&c, r).await }));
    m.insert("Exec".into(), method(core, |c, r: task::ExecProcessRequest| async move { rpc::exec(&c, r).await }));
    m.insert("Pause".into(), method(core, |c, r: task::PauseRequest| async move { rpc::pause(&c, r).await }));
    m.insert("Resume".into(), method(core, |c, r: task::ResumeRequest| async move { rpc::resume(&c, r).await }));
    m.insert("Update".into(), method(core, |c, r: task::UpdateTaskRequest| async move { rpc::update(&c, r).await }));
    m.insert("Stats".into(), method(core, |c, r: task::StatsRequest| async move { rpc::stats(&c, r).await }));
    m.insert("ResizePty".into(), method(core, |c, r: task::ResizePtyRequest| async move { rpc::resize_pty(&c, r).await }));
    m.insert("Checkpoint".into(), method(core, |c, r: task::CheckpointTaskRequest| async move { rpc::checkpoint(&c, r).await }));
    m
}

/// Both task services, ready for `Server::register_service`.
pub fn services(core: &Arc<TaskCore>) -> HashMap<String, Service> {
    TASK_SERVICES
        .iter()
        .map(|name| (name.to_string(), Service { methods: task_methods(core), streams: HashMap::new() }))
        .collect()
}
