//! Bytes from the shim's ttrpc socket: frames read by the ttrpc crate's decoder (as the shim's server
//! reads them), requests decoded, and each task request taken as far as the shim goes before its
//! core acts: the payload decoded, and Create, Exec and Update converted (ids checked, the process
//! spec and resources parsed from their JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use myshim_protos::containerd::task::v3 as task;
use myshim_runtime::state::validate_id;
use myshim_shim::api::task as wire;
use prost::Message;
use ttrpc::proto::{GenMessage, Request};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async {
        let mut reader = data;
        while let Ok(frame) = GenMessage::read_from(&mut reader).await {
            if let Ok(message) = ttrpc::proto::Message::<Request>::try_from(frame) {
                take_request(&message.payload.method, &message.payload.payload);
            }
        }
    });
});

fn take_request(method: &str, payload: &[u8]) {
    match method {
        "Create" => {
            if let Ok(request) = task::CreateTaskRequest::decode(payload).map(wire::create_request) {
                if let Ok(create) = request {
                    let _ = validate_id(&create.id);
                }
            }
        }
        "Exec" => {
            if let Ok(Ok(exec)) = task::ExecProcessRequest::decode(payload).map(wire::exec_request) {
                let _ = validate_id(&exec.exec_id);
            }
        }
        "Update" => {
            if let Ok(update) = task::UpdateTaskRequest::decode(payload) {
                let _ = wire::update_resources(&update);
            }
        }
        "Start" => drop(task::StartRequest::decode(payload)),
        "Delete" => drop(task::DeleteRequest::decode(payload)),
        "State" => drop(task::StateRequest::decode(payload)),
        "Wait" => drop(task::WaitRequest::decode(payload)),
        "Kill" => drop(task::KillRequest::decode(payload)),
        "CloseIO" => drop(task::CloseIoRequest::decode(payload)),
        "Pids" => drop(task::PidsRequest::decode(payload)),
        "ResizePty" => drop(task::ResizePtyRequest::decode(payload)),
        "Stats" => drop(task::StatsRequest::decode(payload)),
        _ => {}
    }
}
