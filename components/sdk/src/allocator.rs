//! The components' allocator front: per-size free lists in front of a
//! backing allocator (talc, in `lib.rs`).
//!
//! A filter call makes about fifty small, short-lived allocations (the
//! lifted request's strings, header maps, edits, keys), and frees them all
//! before it returns. Counted with `benches/instructions.sh`, talc's
//! allocate and deallocate were 35% of the guests' instructions in a pass
//! through the four built-in filters (about 250 instructions per
//! allocation and free). Here a small allocation of a size seen before is
//! a pop from its size's list, and a free is a push, a few instructions
//! each; everything else goes to the backing allocator unchanged.
//!
//! - Sizes up to [`MAX_SMALL`] bytes with alignment up to [`GRAIN`] are
//!   rounded up to a multiple of [`GRAIN`]; each such size has a list.
//! - A list keeps at most [`MAX_KEPT`] blocks; a free beyond that goes
//!   back to the backing allocator, so what the lists hold is bounded
//!   (at most 2.1 MB in all) however a plugin allocates.
//! - Not thread-safe: only for single-threaded wasm (no `atomics`).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// The size step of the small classes, and the largest alignment they serve.
pub const GRAIN: usize = 16;
/// The largest allocation the lists serve.
pub const MAX_SMALL: usize = 512;
/// The most blocks one list keeps.
pub const MAX_KEPT: usize = 256;
const CLASSES: usize = MAX_SMALL / GRAIN;

/// A free block: the next one on its list, in its first bytes.
struct Free {
    next: *mut Free,
}

#[derive(Clone, Copy)]
struct List {
    head: *mut Free,
    len: usize,
}

/// `backing`, fronted by one free list per small size.
pub struct Cached<A> {
    backing: A,
    lists: UnsafeCell<[List; CLASSES]>,
}

// SAFETY: `Cached` is only installed on single-threaded targets (wasm
// without atomics), where no two calls can overlap.
unsafe impl<A: Sync> Sync for Cached<A> {}

impl<A> Cached<A> {
    pub const fn new(backing: A) -> Self {
        Self {
            backing,
            lists: UnsafeCell::new(
                [List {
                    head: ptr::null_mut(),
                    len: 0,
                }; CLASSES],
            ),
        }
    }
}

/// The list for `layout`, if it is small: its index and its block layout.
fn class(layout: Layout) -> Option<(usize, Layout)> {
    let size = layout.size();
    if size == 0 || size > MAX_SMALL || layout.align() > GRAIN {
        return None;
    }
    let index = (size - 1) / GRAIN;
    // (index + 1) * GRAIN <= MAX_SMALL, and GRAIN is a power of two.
    let block = Layout::from_size_align((index + 1) * GRAIN, GRAIN).ok()?;
    Some((index, block))
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for Cached<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((index, block)) = class(layout) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.backing.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`), so this is the only
        // reference to the lists.
        let list = unsafe { &mut (*self.lists.get())[index] };
        if list.head.is_null() {
            // SAFETY: `block` has a non-zero size.
            return unsafe { self.backing.alloc(block) };
        }
        let free = list.head;
        // SAFETY: `free` is a block this list holds, written by `dealloc`.
        list.head = unsafe { (*free).next };
        list.len -= 1;
        free.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((index, block)) = class(layout) else {
            // SAFETY: allocated by the backing allocator with `layout`.
            return unsafe { self.backing.dealloc(ptr, layout) };
        };
        // SAFETY: single-threaded (see `Sync`).
        let list = unsafe { &mut (*self.lists.get())[index] };
        if list.len >= MAX_KEPT {
            // SAFETY: every small block was allocated with its class's
            // `block` layout (by `alloc`, or `realloc` through it).
            return unsafe { self.backing.dealloc(ptr, block) };
        }
        let free = ptr.cast::<Free>();
        // SAFETY: the block is at least GRAIN bytes, aligned to GRAIN, and
        // no longer the caller's.
        unsafe { free.write(Free { next: list.head }) };
        list.head = free;
        list.len += 1;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` makes a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            // The block already has room for the new size.
            (Some((a, _)), Some((b, _))) if a == b => ptr,
            // Both large: the backing allocator may grow in place.
            // SAFETY: the caller's contract, passed on.
            (None, None) => unsafe { self.backing.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: `new` has a non-zero size (the caller's contract).
                let moved = unsafe { self.alloc(new) };
                if !moved.is_null() {
                    // SAFETY: both blocks are live and hold at least the
                    // smaller of the two sizes.
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn small_sizes_share_a_block_per_grain() {
        assert_eq!(class(layout(1, 1)).unwrap().0, 0);
        assert_eq!(class(layout(16, 8)).unwrap().0, 0);
        assert_eq!(class(layout(17, 1)).unwrap().0, 1);
        assert_eq!(class(layout(MAX_SMALL, 16)).unwrap().1.size(), MAX_SMALL);
        assert!(class(layout(MAX_SMALL + 1, 1)).is_none());
        assert!(
            class(layout(8, 32)).is_none(),
            "over-aligned goes to the backing"
        );
        assert!(class(layout(0, 1)).is_none());
    }

    #[test]
    fn a_freed_block_is_handed_out_again_for_its_size() {
        let a = Cached::new(System);
        unsafe {
            let p = a.alloc(layout(24, 8));
            a.dealloc(p, layout(24, 8));
            assert_eq!(a.alloc(layout(30, 4)), p, "same class: reused");
            let q = a.alloc(layout(30, 4));
            assert_ne!(q, p, "a live block is never handed out twice");
            assert_eq!(q as usize % GRAIN, 0);
            a.dealloc(p, layout(30, 4));
            a.dealloc(q, layout(30, 4));
        }
    }

    #[test]
    fn lists_are_bounded() {
        let a = Cached::new(System);
        let l = layout(64, 8);
        unsafe {
            let blocks: Vec<_> = (0..MAX_KEPT + 10).map(|_| a.alloc(l)).collect();
            for &b in &blocks {
                a.dealloc(b, l);
            }
            let index = class(l).unwrap().0;
            assert_eq!((*a.lists.get())[index].len, MAX_KEPT);
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_classes() {
        let a = Cached::new(System);
        unsafe {
            let mut p = a.alloc(layout(10, 1));
            for i in 0..10 {
                *p.add(i) = i as u8;
            }
            // Same class: the same block.
            assert_eq!(a.realloc(p, layout(10, 1), 16), p);
            // Small to small, small to large and back: contents move along.
            for (old, new) in [(16, 100), (100, 4000), (4000, 300), (300, 5)] {
                p = a.realloc(p, layout(old, 1), new);
                assert!(!p.is_null());
                for i in 0..5 {
                    assert_eq!(*p.add(i), i as u8, "{old} -> {new}");
                }
            }
            a.dealloc(p, layout(5, 1));
        }
    }
}
