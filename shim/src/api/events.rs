//! Task events in wire terms: topic and payload for each core event.

use std::time::SystemTime;

use myshim_protos::containerd::events as ev;
use myshim_protos::containerd::types::Envelope;
use myshim_protos::to_any;

use super::task::{rootfs_to_wire, timestamp};
use crate::core::types::TaskEvent;

pub fn envelope(event: &TaskEvent, namespace: &str, at: SystemTime) -> Envelope {
    let (topic, payload) = match event {
        TaskEvent::Create { container_id, bundle, rootfs, stdio, checkpoint, pid } => (
            "/tasks/create",
            to_any(&ev::TaskCreate {
                container_id: container_id.clone(),
                bundle: bundle.display().to_string(),
                rootfs: rootfs_to_wire(rootfs),
                io: Some(ev::TaskIo {
                    stdin: stdio.stdin.clone(),
                    stdout: stdio.stdout.clone(),
                    stderr: stdio.stderr.clone(),
                    terminal: stdio.terminal,
                }),
                checkpoint: checkpoint.clone(),
                pid: *pid,
            }),
        ),
        TaskEvent::Start { container_id, pid } => {
            ("/tasks/start", to_any(&ev::TaskStart { container_id: container_id.clone(), pid: *pid }))
        }
        TaskEvent::Exit { container_id, id, exit } => (
            "/tasks/exit",
            to_any(&ev::TaskExit {
                container_id: container_id.clone(),
                id: id.clone(),
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(Some(exit.at))),
            }),
        ),
        TaskEvent::Delete { container_id, exit } => (
            "/tasks/delete",
            to_any(&ev::TaskDelete {
                container_id: container_id.clone(),
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(Some(exit.at))),
                id: String::new(),
            }),
        ),
        TaskEvent::ExecAdded { container_id, exec_id } => {
            ("/tasks/exec-added", to_any(&ev::TaskExecAdded { container_id: container_id.clone(), exec_id: exec_id.clone() }))
        }
        TaskEvent::ExecStarted { container_id, exec_id, pid } => (
            "/tasks/exec-started",
            to_any(&ev::TaskExecStarted { container_id: container_id.clone(), exec_id: exec_id.clone(), pid: *pid }),
        ),
        TaskEvent::Oom { container_id } => ("/tasks/oom", to_any(&ev::TaskOom { container_id: container_id.clone() })),
        TaskEvent::Paused { container_id } => ("/tasks/paused", to_any(&ev::TaskPaused { container_id: container_id.clone() })),
        TaskEvent::Resumed { container_id } => ("/tasks/resumed", to_any(&ev::TaskResumed { container_id: container_id.clone() })),
    };
    Envelope { timestamp: Some(timestamp(Some(at))), namespace: namespace.to_owned(), topic: topic.to_owned(), event: Some(payload) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::Exit;

    #[test]
    fn exit_envelope_has_bare_type_url_and_topic() {
        let at = SystemTime::now();
        let e = envelope(
            &TaskEvent::Exit { container_id: "c".into(), id: "c".into(), exit: Exit { pid: 7, status: 137, at } },
            "ns",
            at,
        );
        assert_eq!(e.topic, "/tasks/exit");
        assert_eq!(e.namespace, "ns");
        assert_eq!(e.event.as_ref().unwrap().type_url, "containerd.events.TaskExit");
        assert!(e.timestamp.unwrap().seconds > 0);
    }
}
