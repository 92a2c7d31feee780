//! The allocator of a big workspace's member table: transparent huge pages where Linux has them.
//!
//! A check reads one member's entry at random from the table. At 100,000 members the table's
//! buckets take 8 MB, 2,048 pages of 4 KB: more than the processor's TLB holds beside everything
//! else, so many checks also walked the page tables. On 2 MB pages the buckets are four pages;
//! hashbrown's control bytes, one per bucket after them, stay on 4 KB pages (33 at 100,000
//! members). Every page of such a table holds entries (they are spread over it by their hash, and
//! a table is at least 7/16 full), so huge pages cost no memory that 4 KB pages would not; only
//! whole 2 MB spans are advised, never a partly used tail. What they can cost is time when the
//! table is allocated and first written: with the kernel's `defrag` setting at its default
//! (`madvise`), a fault in an advised span may compact memory to find a huge page. Smaller tables,
//! and every table where the base page is not 4 KB or the system is not Linux, come from the
//! global allocator as before.

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use std::ptr::NonNull;

/// The size of a huge page on Linux with 4 KB pages, and the smallest allocation that gets them.
#[cfg(any(target_os = "linux", test))]
const HUGE_PAGE: usize = 2 << 20;

/// Allocates from the global allocator, or, for 2 MB and more on Linux with 4 KB pages, maps
/// memory aligned to 2 MB and advises the kernel to back it with transparent huge pages. Where
/// the kernel's THP mode is `never` (or the process opted out, as with `MIMALLOC_ALLOW_THP=0`) the
/// advice does nothing and the memory is ordinary.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HugePages;

// SAFETY: memory from `allocate` stays valid until `deallocate`. `deallocate` may be given any
// layout that fits the block (a size from the one asked for to the length returned); every such
// size routes to the same source as the allocation did, since `map::mapped` holds for all of them
// or none (the page size does not change while the process runs), and `map::length` rounds all
// of them to the same mapping. Copies of `HugePages` are interchangeable, having no state.
unsafe impl Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        #[cfg(target_os = "linux")]
        if map::mapped(layout) {
            return map::allocate(layout.size());
        }
        Global.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        #[cfg(target_os = "linux")]
        if map::mapped(layout) {
            // SAFETY: the caller passes memory `allocate` mapped for a layout that fits it.
            return unsafe { map::deallocate(ptr, layout.size()) };
        }
        // SAFETY: the caller passes memory `Global` allocated for a layout that fits it.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

#[cfg(target_os = "linux")]
mod map {
    use super::HUGE_PAGE;
    use allocator_api2::alloc::{AllocError, Layout};
    use std::ptr::{self, NonNull};
    use std::sync::OnceLock;

    /// The base page size.
    fn page_size() -> usize {
        static PAGE: OnceLock<usize> = OnceLock::new();
        // SAFETY: sysconf reads a constant of the system.
        *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0))
    }

    /// Whether an allocation of `layout` is mapped on its own: 2 MB or more, where 2 MB is the
    /// huge page (4 KB base pages; with 16 or 64 KB pages huge pages are 32 or 512 MB).
    pub(super) fn mapped(layout: Layout) -> bool {
        layout.size() >= HUGE_PAGE && layout.align() <= HUGE_PAGE && page_size() == 4096
    }

    /// The mapping's length for `size` bytes: whole pages.
    fn length(size: usize) -> usize {
        size.next_multiple_of(4096)
    }

    pub(super) fn allocate(size: usize) -> Result<NonNull<[u8]>, AllocError> {
        let len = length(size);
        // Map 2 MB more than needed and unmap what lies before the first 2 MB boundary and after
        // the table, so that the table starts on a boundary.
        let padded = len.checked_add(HUGE_PAGE).ok_or(AllocError)?;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: an anonymous private mapping at an address the kernel chooses touches no
        // existing memory.
        let start = unsafe { libc::mmap(ptr::null_mut(), padded, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if start == libc::MAP_FAILED {
            return Err(AllocError);
        }
        let head = start.addr().next_multiple_of(HUGE_PAGE) - start.addr();
        let Some(table) = NonNull::new(start.wrapping_byte_add(head)) else {
            // Only if the kernel mapped page 0, which it does not: give the mapping back.
            // SAFETY: the whole mapping just made.
            unsafe { libc::munmap(start, padded) };
            return Err(AllocError);
        };
        let tail = padded - head - len;
        // SAFETY: both ranges lie inside the mapping just made, outside the table, and are
        // page-aligned (`start`, `len` and the 2 MB boundary are multiples of 4 KB, the page
        // size `mapped` requires); `tail` is more than 0, since `head` is less than 2 MB.
        unsafe {
            if head > 0 {
                libc::munmap(start, head);
            }
            libc::munmap(table.as_ptr().wrapping_byte_add(len), tail);
            // Only whole 2 MB spans: a huge page for a partly used tail would make all of it
            // resident. The advice can fail (THP compiled out or disabled); the memory works
            // either way.
            libc::madvise(table.as_ptr(), len / HUGE_PAGE * HUGE_PAGE, libc::MADV_HUGEPAGE);
        }
        Ok(NonNull::slice_from_raw_parts(table.cast::<u8>(), len))
    }

    /// # Safety
    /// `ptr` comes from [`allocate`] with a size that `size` rounds to the same [`length`], and
    /// is not used after.
    pub(super) unsafe fn deallocate(ptr: NonNull<u8>, size: usize) {
        // SAFETY: the caller passes a whole mapping made by `allocate`.
        unsafe { libc::munmap(ptr.as_ptr().cast(), length(size)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_big_allocations_are_usable_and_big_ones_start_on_a_huge_page() {
        for size in [64, HUGE_PAGE - 64, HUGE_PAGE, 8 * HUGE_PAGE + 4160, 3 * HUGE_PAGE + 1] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            let block = HugePages.allocate(layout).unwrap();
            assert!(block.len() >= size);
            let start = block.cast::<u8>();
            #[cfg(target_os = "linux")]
            if map::mapped(layout) {
                assert_eq!(start.as_ptr().addr() % HUGE_PAGE, 0, "size {size}");
            }
            // SAFETY: the block has `size` bytes, written then read back.
            unsafe {
                start.as_ptr().write_bytes(0xa5, size);
                assert_eq!(*start.as_ptr().add(size - 1), 0xa5);
                HugePages.deallocate(start, layout);
            }
        }
    }
}
