//! The allocator of a big workspace's member table: transparent huge pages where Linux has them.
//!
//! A check reads one member's entry at random from the table. At 100,000 members the table is
//! 8 MB, 2,048 pages of 4 KB: more than the processor's TLB holds beside everything else, so
//! many checks also walk the page tables. On 2 MB pages the same table is four pages. Every page
//! of such a table is touched anyway (the entries are spread over it by their hash), so huge pages
//! cost no memory that 4 KB pages would not; only the whole 2 MB spans are advised, never a
//! partly used tail. Smaller tables, and every table elsewhere than on Linux, come from the global
//! allocator as before.

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use std::ptr::NonNull;

/// The size of a huge page, and the smallest allocation that gets them.
const HUGE_PAGE: usize = 2 << 20;

/// Allocates from the global allocator, or, for 2 MB and more on Linux, maps memory aligned to
/// 2 MB and advises the kernel to back it with transparent huge pages. Where the kernel's THP
/// mode is `never` the advice does nothing and the memory is ordinary.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HugePages;

/// Whether an allocation of `layout` is mapped on its own.
#[cfg(target_os = "linux")]
fn mapped(layout: Layout) -> bool {
    layout.size() >= HUGE_PAGE && layout.align() <= HUGE_PAGE
}

// SAFETY: memory from `allocate` stays valid until `deallocate` with the same layout, which
// routes to the same source (`mapped` depends on the layout only); copies of `HugePages` are
// interchangeable, having no state.
unsafe impl Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        #[cfg(target_os = "linux")]
        if mapped(layout) {
            return map::allocate(layout.size());
        }
        Global.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        #[cfg(target_os = "linux")]
        if mapped(layout) {
            // SAFETY: the caller passes memory `allocate` mapped for this layout.
            return unsafe { map::deallocate(ptr, layout.size()) };
        }
        // SAFETY: the caller passes memory `Global` allocated for this layout.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

#[cfg(target_os = "linux")]
mod map {
    use super::HUGE_PAGE;
    use allocator_api2::alloc::AllocError;
    use std::ptr::{self, NonNull};

    /// The mapping's length for `size` bytes: whole pages.
    fn length(size: usize) -> usize {
        // SAFETY: sysconf reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        size.next_multiple_of(usize::try_from(page).unwrap_or(4096).max(1))
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
        let table = start.wrapping_byte_add(head);
        // SAFETY: both ranges lie inside the mapping just made, outside the table, and are
        // page-aligned (`start`, `len` and the 2 MB boundary are multiples of the page size).
        unsafe {
            if head > 0 {
                libc::munmap(start, head);
            }
            if padded - head - len > 0 {
                libc::munmap(table.wrapping_byte_add(len), padded - head - len);
            }
            // Only whole 2 MB spans: a huge page for a partly used tail would make all of it
            // resident. The advice can fail (THP compiled out or disabled); the memory works
            // either way.
            libc::madvise(table, len / HUGE_PAGE * HUGE_PAGE, libc::MADV_HUGEPAGE);
        }
        let table = NonNull::new(table.cast::<u8>()).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(table, len))
    }

    /// # Safety
    /// `ptr` comes from [`allocate`] with the same `size`, and is not used after.
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
            if cfg!(target_os = "linux") && size >= HUGE_PAGE {
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
