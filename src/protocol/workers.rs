//! Which serving worker a thread is. The binary serves on one single-threaded runtime per
//! core (nginx's worker model, see `http::workers`); each worker keeps its own pooled
//! upstream connections, so a request is served on one thread from end to end. On the bare
//! stack a client pool shared by two workers gave back half of what the workers gained.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many workers will serve (0 until the server says; everything then uses slot 0).
static WORKERS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's worker number, from 1; 0 on every other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Says that `count` workers will serve, before anything per worker is made.
pub fn reserve(count: usize) {
    WORKERS.fetch_max(count, Ordering::Relaxed);
}

/// Marks the calling thread as worker `number` (from 1).
pub fn enter(number: usize) {
    WORKER.with(|worker| worker.set(number));
}

/// The calling thread's worker number (0: not a worker).
fn current() -> usize {
    WORKER.with(Cell::get)
}

/// One `T` per worker (and one for every other thread), each made on first use there.
pub struct PerWorker<T> {
    slots: Box<[OnceLock<T>]>,
}

impl<T> Default for PerWorker<T> {
    fn default() -> Self {
        let slots = WORKERS.load(Ordering::Relaxed) + 1;
        Self {
            slots: (0..slots).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl<T> PerWorker<T> {
    /// The calling worker's `T`, made by `make` the first time.
    pub fn get(&self, make: impl FnOnce() -> T) -> &T {
        // A worker past the slots made before the count was known shares slot 0.
        let slot = self.slots.get(current()).unwrap_or(&self.slots[0]);
        slot.get_or_init(make)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_gets_its_own_value_and_others_share_one() {
        reserve(2);
        let made = AtomicUsize::new(0);
        let per_worker = PerWorker::<usize>::default();
        let make = || made.fetch_add(1, Ordering::Relaxed);
        let on = |number| {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        enter(number);
                        *per_worker.get(make)
                    })
                    .join()
                    .unwrap()
            })
        };
        let (first, second) = (on(1), on(2));
        assert_ne!(first, second);
        assert_eq!(on(1), first, "made once per worker");
        assert_eq!(on(0), on(0), "threads that are no worker share one");
        assert_eq!(on(usize::MAX), on(0), "a worker past the slots shares slot 0");
        assert_eq!(made.load(Ordering::Relaxed), 3);
    }
}
