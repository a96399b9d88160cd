//! Synchronisation every thread shares: the lock that survives a poisoned mutex, the bell
//! that wakes a waiter when something changed, and the cancellation of a running step: a flag
//! the step polls, hooks that interrupt what it blocks on (kill its child processes, cancel its
//! query), and sleeps that end early.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

type Hook = Box<dyn FnOnce() + Send>;

/// Shared by the executor (which cancels) and the step (which is cancelled).
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    hooks: Mutex<Vec<(u64, Hook)>>,
    next_hook: AtomicU64,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Cancels once: runs every registered hook and wakes every sleeper.
    pub fn cancel(&self) {
        if self.inner.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        let hooks = std::mem::take(&mut *lock(&self.inner.hooks));
        for (_, hook) in hooks {
            hook();
        }
        let _guard = lock(&self.inner.sleep_lock);
        self.inner.wake.notify_all();
    }

    /// Runs `hook` on cancellation (at once if already cancelled) until the returned guard
    /// is dropped: register it around a blocking call, drop it when the call returns.
    pub fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) -> HookGuard {
        let id = self.inner.next_hook.fetch_add(1, Ordering::SeqCst);
        lock(&self.inner.hooks).push((id, Box::new(hook)));
        // A cancel that raced the push has already taken the list; run what is left.
        if self.is_cancelled() {
            let left = std::mem::take(&mut *lock(&self.inner.hooks));
            for (_, hook) in left {
                hook();
            }
        }
        HookGuard {
            token: self.clone(),
            id,
        }
    }

    /// Sleeps `duration`, or less if cancelled; returns whether the sleep ran its course.
    pub fn sleep(&self, duration: Duration) -> bool {
        let guard = lock(&self.inner.sleep_lock);
        if self.is_cancelled() {
            return false;
        }
        let result = self
            .inner
            .wake
            .wait_timeout_while(guard, duration, |_| !self.is_cancelled());
        drop(result);
        !self.is_cancelled()
    }
}

/// Unregisters a cancel hook when dropped.
#[derive(Debug)]
pub struct HookGuard {
    token: CancelToken,
    id: u64,
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        lock(&self.token.inner.hooks).retain(|(id, _)| *id != self.id);
    }
}

/// A counter that waiters sleep on: whoever changes something rings it, a waiter remembers
/// the count it has seen and sleeps until the count moves on (or its time is up), so no ring
/// between two looks is lost.
#[derive(Debug, Default)]
pub struct Bell {
    rung: Mutex<u64>,
    wake: Condvar,
}

impl Bell {
    pub fn ring(&self) {
        *lock(&self.rung) += 1;
        self.wake.notify_all();
    }

    /// The count now: pass it to `wait` after looking.
    pub fn seen(&self) -> u64 {
        *lock(&self.rung)
    }

    /// Sleeps until the bell rang after `seen`, at most `timeout`; returns the count.
    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = lock(&self.rung);
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, timeout, |rung| *rung == seen)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard
    }
}

/// Locks, recovering from a poisoned mutex: the data behind these locks stays valid even if
/// a thread panicked while holding one (and release builds abort on panic anyway).
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_bell_rung_between_two_looks_is_not_lost() {
        let bell = Arc::new(Bell::default());
        let seen = bell.seen();
        bell.ring();
        let started = Instant::now();
        assert_eq!(bell.wait(seen, Duration::from_secs(30)), seen + 1);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(bell.wait(seen + 1, Duration::from_millis(10)), seen + 1);
        let ringer = bell.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ringer.ring();
        });
        assert_eq!(bell.wait(seen + 1, Duration::from_secs(30)), seen + 2);
        handle.join().unwrap();
    }

    #[test]
    fn cancel_runs_hooks_once_and_wakes_sleepers() {
        let token = CancelToken::new();
        let counter = Arc::new(AtomicU64::new(0));
        let c = counter.clone();
        let _guard = token.on_cancel(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let sleeper = token.clone();
        let started = Instant::now();
        let handle = std::thread::spawn(move || sleeper.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        token.cancel();
        token.cancel();
        assert!(!handle.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(counter.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dropped_guard_unregisters_and_late_hook_runs_at_once() {
        let token = CancelToken::new();
        let counter = Arc::new(AtomicU64::new(0));
        let c = counter.clone();
        drop(token.on_cancel(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        token.cancel();
        assert_eq!(counter.load(Ordering::SeqCst), 0);
        let c = counter.clone();
        let _guard = token.on_cancel(move || {
            c.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(counter.load(Ordering::SeqCst), 10);
    }
}
