//! Per-worker drain signal: once started, every waiter (accept loops, idle keep-alive
//! connections) wakes and winds down. Single-threaded: the control plane reaches a worker
//! through its control tick, not through this type.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub(crate) struct Drain {
    started: Cell<bool>,
    /// Registered wakers; `None` slots are free and listed in `free`.
    wakers: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Drain {
    pub(crate) fn start(&self) {
        self.started.set(true);
        for w in self.wakers.borrow_mut().iter_mut().filter_map(Option::take) {
            w.wake();
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.started.get()
    }

    /// Resolves once draining has started.
    pub(crate) fn wait(&self) -> DrainWait<'_> {
        DrainWait { drain: self, slot: None }
    }
}

pub(crate) struct DrainWait<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.started.get() {
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        let mut wakers = self.drain.wakers.borrow_mut();
        match self.slot {
            Some(i) => wakers[i] = waker,
            None => {
                let i = match self.drain.free.borrow_mut().pop() {
                    Some(i) => {
                        wakers[i] = waker;
                        i
                    }
                    None => {
                        wakers.push(waker);
                        wakers.len() - 1
                    }
                };
                drop(wakers);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.drain.wakers.borrow_mut()[i] = None;
            self.drain.free.borrow_mut().push(i);
        }
    }
}
