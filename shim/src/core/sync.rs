//! Locks that outlive a panic. A request whose task panicked while holding a container's lock must not
//! make every later Kill, Pids or Delete of that container fail: what these mutexes guard (tables,
//! handles, state machines) is consistent between statements, so the guard is taken back as it is.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) trait LockAnyway<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> LockAnyway<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
