//! A slab of parked tasks on one worker: each waiter holds a slot with its waker and a small
//! payload; the owner wakes the slots whose payload says so. Single-threaded (`RefCell`).
//! Used by the drain signal and by the coarse idle deadlines.

use std::cell::RefCell;
use std::task::Waker;

struct Slot<T> {
    data: T,
    waker: Option<Waker>,
}

pub(crate) struct Waiters<T> {
    slots: RefCell<Vec<Option<Slot<T>>>>,
    free: RefCell<Vec<usize>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Self { slots: RefCell::new(Vec::new()), free: RefCell::new(Vec::new()) }
    }
}

impl<T> Waiters<T> {
    /// Stores `waker` in the waiter's slot, taking a slot (with `data`) on first use.
    pub(crate) fn register(&self, slot: &mut Option<usize>, waker: &Waker, data: impl FnOnce() -> T) {
        let mut slots = self.slots.borrow_mut();
        if let Some(i) = *slot {
            if let Some(s) = slots[i].as_mut() {
                s.waker = Some(waker.clone());
            }
            return;
        }
        let entry = Some(Slot { data: data(), waker: Some(waker.clone()) });
        let i = match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i] = entry;
                i
            }
            None => {
                slots.push(entry);
                slots.len() - 1
            }
        };
        *slot = Some(i);
    }

    /// Reads a waiter's payload.
    pub(crate) fn get<R>(&self, slot: usize, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.slots.borrow()[slot].as_ref().map(|s| f(&s.data))
    }

    /// Frees a waiter's slot (when its future is dropped).
    pub(crate) fn release(&self, slot: usize) {
        self.slots.borrow_mut()[slot] = None;
        self.free.borrow_mut().push(slot);
    }

    /// Wakes every waiter for which `pick` (which may update the payload) says so.
    pub(crate) fn wake_where(&self, mut pick: impl FnMut(&mut T) -> bool) {
        let mut woken = Vec::new();
        for s in self.slots.borrow_mut().iter_mut().flatten() {
            if pick(&mut s.data) {
                woken.extend(s.waker.take());
            }
        }
        // Woken outside the borrow: a waker may run code that registers again.
        woken.into_iter().for_each(Waker::wake);
    }

    #[cfg(test)]
    pub(crate) fn occupied(&self) -> usize {
        self.slots.borrow().iter().flatten().count()
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.borrow().len()
    }
}
