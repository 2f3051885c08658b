//! Watching containerd's events with `ctr events`, to check what a shim published and in which order.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Containerd;

#[derive(Debug, Clone)]
pub struct Event {
    pub topic: String,
    pub payload: serde_json::Value,
}

impl Event {
    pub fn container_id(&self) -> Option<&str> {
        self.payload.get("container_id").and_then(|v| v.as_str())
    }

    /// The `id` field (for exits: the container id for the init, the exec id otherwise).
    pub fn id(&self) -> Option<&str> {
        self.payload.get("id").and_then(|v| v.as_str())
    }
}

pub struct Events {
    child: Child,
    seen: Arc<Mutex<Vec<Event>>>,
}

impl Events {
    /// Starts `ctr events` against the instance and collects what it prints.
    pub fn watch(containerd: &Containerd) -> Events {
        let mut child = containerd.ctr_command(&["events"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("run ctr events");
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(event) = parse(&line) {
                    sink.lock().unwrap().push(event);
                }
            }
        });
        // ctr subscribes asynchronously; give it a moment before the test produces events.
        std::thread::sleep(Duration::from_millis(300));
        Events { child, seen }
    }

    /// Task events of one container, in arrival order.
    pub fn of(&self, container_id: &str) -> Vec<Event> {
        self.seen.lock().unwrap().iter().filter(|e| e.topic.starts_with("/tasks/") && e.container_id() == Some(container_id)).cloned().collect()
    }

    pub fn topics_of(&self, container_id: &str) -> Vec<String> {
        self.of(container_id).into_iter().map(|e| e.topic).collect()
    }

    /// Waits until `container_id` has an event with `topic`; returns whether it came in time.
    pub fn wait_for(&self, container_id: &str, topic: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.of(container_id).iter().any(|e| e.topic == topic) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// `2026-11-29 09:41:28.92 +0000 UTC <namespace> <topic> <json>`.
fn parse(line: &str) -> Option<Event> {
    let mut fields = line.splitn(7, ' ');
    let topic = fields.nth(5)?;
    let payload = fields.next().and_then(|json| serde_json::from_str(json).ok()).unwrap_or(serde_json::Value::Null);
    topic.starts_with('/').then(|| Event { topic: topic.to_owned(), payload })
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_ctr_event_lines() {
        let e = super::parse(r#"2026-11-29 09:41:28.9405896 +0000 UTC t1 /tasks/exec-added {"container_id":"c5","exec_id":"x1"}"#).unwrap();
        assert_eq!(e.topic, "/tasks/exec-added");
        assert_eq!(e.container_id(), Some("c5"));
    }
}
