//! Deterministic wake-ups for tasks, in place of `tokio::sync::watch`.
//!
//! tokio's watch receivers register on one of eight notification shards chosen by tokio's
//! own thread-local random generator, which is seeded from a process-wide counter — not
//! from the simulator's seed. The order in which waiters wake then differs between two
//! runs of the same seed, and madsim's determinism check fails. These primitives use a
//! single `Notify`, whose waiters wake in FIFO order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    value: AtomicU64,
    notify: Notify,
}

/// A value that only grows, which tasks can wait on (e.g. the number of durable events).
#[derive(Clone, Debug, Default)]
pub struct Counter {
    inner: Arc<Inner>,
}

impl Counter {
    pub fn new(value: u64) -> Counter {
        let counter = Counter::default();
        counter.inner.value.store(value, Ordering::SeqCst);
        counter
    }

    pub fn get(&self) -> u64 {
        self.inner.value.load(Ordering::SeqCst)
    }

    /// Raises the value to `value` (never lowers it) and wakes every waiter.
    pub fn advance_to(&self, value: u64) {
        self.inner.value.fetch_max(value, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Resolves once the value is above `value`.
    pub async fn wait_above(&self, value: u64) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so an advance in between is not missed.
            notified.as_mut().enable();
            if self.get() > value {
                return;
            }
            notified.await;
        }
    }
}

/// A one-way stop signal shared by every task of a node.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    counter: Counter,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        self.counter.advance_to(1);
    }

    pub fn is_triggered(&self) -> bool {
        self.counter.get() > 0
    }

    /// Resolves once [`trigger`](Self::trigger) was called (at once if it already was).
    pub async fn wait(&self) {
        self.counter.wait_above(0).await;
    }
}
