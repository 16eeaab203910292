//! Recycled heap blocks for the per-request futures of a worker, so that a proxied request
//! in steady state calls the allocator zero times. It owns the blocks and their free lists;
//! what runs in a block (reading a head, the exchange) is the caller's.
//!
//! Why the futures are out of line at all: a connection task holds its per-request state
//! (parsing, the exchange with its timers and body copies: a few KiB) only while a request
//! is in flight. Kept inline, every parked keep-alive connection would carry that much;
//! boxed, a parked connection costs about 1 KiB (see README, idle memory). A plain `Box`
//! per request cost 3 allocations and frees per request (4% of the worker's user-space
//! instructions in callgrind); a block taken from this arena costs a `Vec::pop`.
//!
//! Blocks are kept per layout (each future type has one), at most [`KEEP_PER_LAYOUT`] of
//! each after a burst; the rest go back to the allocator.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Free blocks kept per layout: enough for this many requests in flight at once on a core
/// without touching the allocator; beyond it, finished requests free their blocks.
const KEEP_PER_LAYOUT: usize = 4096;

/// Free blocks of one layout.
struct FreeList {
    layout: Layout,
    blocks: Vec<NonNull<u8>>,
}

/// A worker's recycled blocks (`!Send`: one per worker thread).
#[derive(Default)]
pub(crate) struct Arena {
    lists: RefCell<Vec<FreeList>>,
}

impl Arena {
    /// Creates the future `make` returns in a block and returns a future that polls it
    /// there. Taking a constructor rather than the future lets the compiler build it in the
    /// block instead of on the stack and then copying all of it (an async fn's future is as
    /// large as its largest state, 2.8 KiB for the exchange, though only its arguments are
    /// set when it is created).
    pub(crate) fn run<F: Future>(&self, make: impl FnOnce() -> F) -> InBlock<'_, F> {
        let layout = Layout::new::<F>();
        let block = if layout.size() == 0 { NonNull::<F>::dangling().cast() } else { self.take(layout) };
        let ptr = block.cast::<F>();
        // SAFETY: `block` is valid for writes of `layout`, which is `F`'s layout (or `F` is
        // zero-sized and the pointer is dangling but aligned), and nothing else refers to it.
        unsafe { ptr.as_ptr().write(make()) };
        InBlock { arena: self, ptr, _owns: PhantomData }
    }

    fn take(&self, layout: Layout) -> NonNull<u8> {
        let reused = self.lists.borrow_mut().iter_mut().find(|l| l.layout == layout).and_then(|l| l.blocks.pop());
        reused.unwrap_or_else(|| {
            // SAFETY: `layout` has a non-zero size (checked by the caller).
            let p = unsafe { alloc::alloc(layout) };
            NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout))
        })
    }

    fn give_back(&self, block: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let mut lists = self.lists.borrow_mut();
        let i = match lists.iter().position(|l| l.layout == layout) {
            Some(i) => i,
            None => {
                lists.push(FreeList { layout, blocks: Vec::new() });
                lists.len() - 1
            }
        };
        let list = &mut lists[i];
        if list.blocks.len() < KEEP_PER_LAYOUT {
            list.blocks.push(block);
        } else {
            // SAFETY: `block` came from `alloc::alloc(layout)` in `take` and is no longer used.
            unsafe { alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for list in self.lists.get_mut().drain(..) {
            for block in list.blocks {
                // SAFETY: every kept block came from `alloc::alloc(list.layout)` and is free.
                unsafe { alloc::dealloc(block.as_ptr(), list.layout) };
            }
        }
    }
}

/// A future living in a block of an [`Arena`]; dropping it drops the future and returns the
/// block.
pub(crate) struct InBlock<'a, F: Future> {
    arena: &'a Arena,
    ptr: NonNull<F>,
    _owns: PhantomData<F>,
}

impl<F: Future> Future for InBlock<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the block holds an initialised `F` until `drop`, is owned by this handle
        // alone, and never moves while the handle exists (moving the handle moves only the
        // pointer), so pinning it is sound.
        let fut = unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) };
        fut.poll(cx)
    }
}

impl<F: Future> Drop for InBlock<'_, F> {
    fn drop(&mut self) {
        // SAFETY: the block holds an initialised `F` that nothing else refers to; it is
        // dropped in place exactly once, here, before its memory is handed back.
        unsafe { self.ptr.as_ptr().drop_in_place() };
        self.arena.give_back(self.ptr.cast(), Layout::new::<F>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::task::Waker;

    struct CountsDrops(Rc<Cell<u32>>);

    impl Drop for CountsDrops {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn reuses_blocks_and_drops_futures_once() {
        let arena = Arena::default();
        let drops = Rc::new(Cell::new(0));
        let mut cx = Context::from_waker(Waker::noop());
        let mut first_block = None;
        for i in 0..3u64 {
            let guard = CountsDrops(drops.clone());
            let mut f = std::pin::pin!(arena.run(|| async move {
                let _g = guard;
                i * 2
            }));
            first_block.get_or_insert(f.ptr.cast::<u8>());
            assert_eq!(f.ptr.cast::<u8>(), first_block.unwrap(), "the freed block is reused");
            assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(i * 2));
        }
        assert_eq!(drops.get(), 3);
        // A future dropped before it finishes drops its state too.
        let guard = CountsDrops(drops.clone());
        let pending = arena.run(|| async move {
            let _g = guard;
            std::future::pending::<()>().await;
        });
        drop(pending);
        assert_eq!(drops.get(), 4);
    }
}
