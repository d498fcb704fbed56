//! Small helpers every backend needs the same way: locks that survive a
//! panic elsewhere, and a task that ends with its owner.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::task::JoinHandle;

/// Lock `m`, also when a thread panicked while holding it. Critical sections
/// in this library are a few container operations that a panic cannot leave
/// half done, so a poisoned lock still guards consistent data.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-lock `l`, also when it is poisoned (see [`lock`]).
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-lock `l`, also when it is poisoned (see [`lock`]).
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// A spawned task that is aborted when this guard drops, so that a
/// background task never outlives the handle that owns it.
/// [`AbortOnDrop::detach`] lets it run on.
#[derive(Debug)]
pub struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    /// Guard `task`.
    pub fn new(task: JoinHandle<()>) -> Self {
        AbortOnDrop(Some(task))
    }

    /// Stop guarding: the task runs on; its handle is returned.
    pub fn detach(mut self) -> JoinHandle<()> {
        self.0
            .take()
            .expect("an AbortOnDrop holds its task until detached")
    }

    /// Abort the task now.
    pub fn abort(&self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl From<JoinHandle<()>> for AbortOnDrop {
    fn from(task: JoinHandle<()>) -> Self {
        AbortOnDrop::new(task)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn poisoned_locks_are_still_usable() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
        let l = RwLock::new(5);
        *write(&l) += 1;
        assert_eq!(*read(&l), 6);
    }

    #[tokio::test]
    async fn the_task_ends_with_its_guard_unless_detached() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let guard = AbortOnDrop::new(tokio::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        }));
        assert!(!guard.is_finished());
        drop(guard);
        // The task, and with it the sender, is gone.
        let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(closed, Ok(None));

        let guard = AbortOnDrop::new(tokio::spawn(async {}));
        let handle = guard.detach();
        assert!(handle.await.is_ok());
    }
}
