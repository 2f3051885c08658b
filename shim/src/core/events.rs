//! The core's outgoing event queue: FIFO, unbounded, with a count of events not yet delivered so the
//! shim can let the last ones go out before it exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::types::TaskEvent;

#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::UnboundedSender<(TaskEvent, SystemTime)>,
    pending: Arc<AtomicUsize>,
    /// Parts of the shim that react to task events (besides publishing them).
    observers: tokio::sync::broadcast::Sender<TaskEvent>,
}

pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<(TaskEvent, SystemTime)>,
    pending: Arc<AtomicUsize>,
}

pub fn queue() -> (EventQueue, EventReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicUsize::new(0));
    let observers = tokio::sync::broadcast::channel(64).0;
    (EventQueue { tx, pending: pending.clone(), observers }, EventReceiver { rx, pending })
}

impl EventQueue {
    pub fn push(&self, event: TaskEvent) {
        if self.observers.receiver_count() > 0 {
            let _ = self.observers.send(event.clone());
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send((event, SystemTime::now())).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Every event pushed from now on.
    pub fn observe(&self) -> tokio::sync::broadcast::Receiver<TaskEvent> {
        self.observers.subscribe()
    }

    /// Waits until every queued event was delivered, or `timeout` passed.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.pending.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl EventReceiver {
    pub async fn next(&mut self) -> Option<(TaskEvent, SystemTime)> {
        self.rx.recv().await
    }

    /// Marks the event last returned by [`EventReceiver::next`] as delivered.
    pub fn delivered(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }
}
