//! A cache hit allocates nothing: counted by a test-only global allocator, per thread so the
//! other tests running in parallel do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hickory_proto::rr::RecordType;

use super::{cached_www, query, udp_client};
use crate::{AnswerKind, QueryOutcome};

thread_local! {
    /// Allocations made by this thread so far.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations per thread.
struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// const-initialised thread-local without destructor, so touching it never allocates.
#[expect(
    unsafe_code,
    reason = "a counting global allocator for this test binary"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn cache_hit_allocates_nothing() {
    let (mut r, now) = cached_www();
    let mut out = Vec::new();
    // With and without EDNS, in another letter case than cached.
    let queries = [
        query(2, "WWW.example.com.", RecordType::A, Some((1232, false))),
        query(3, "www.EXAMPLE.com.", RecordType::A, None),
    ];
    let client = udp_client();
    for q in &queries {
        // The first answer sizes `out`; from then on it is reused, as the daemon does.
        let o = r.handle_query(now, client, q, &mut out);
        assert_eq!(o, QueryOutcome::Answered(AnswerKind::Cache));
        let before = allocations();
        for _ in 0..100 {
            let o = r.handle_query(now, client, q, &mut out);
            assert_eq!(o, QueryOutcome::Answered(AnswerKind::Cache));
        }
        assert_eq!(allocations() - before, 0, "allocations on 100 cache hits");
    }
}
