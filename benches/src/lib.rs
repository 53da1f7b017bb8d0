//! Benchmarks only: see `criterion/` (cargo bench -p sbc-benches) and `load/`.
//!
//! [`CountingAlloc`] lets a bench binary count heap allocations per operation: each bench
//! installs it as its global allocator and reports [`allocations_per_op`] next to criterion's
//! times (allocations are what the hot path is usually tuned on first), and [`live_bytes`]
//! tells what a structure holds on the heap. [`tasks_cpu_ns`] and [`process_cpu_s`] are the
//! load tools' CPU readings from /proc.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed (what a structure holds, without the allocator's overhead).
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

fn grew(bytes: usize) {
    LIVE_BYTES.fetch_add(bytes as i64, Relaxed);
}

fn shrank(bytes: usize) {
    LIVE_BYTES.fetch_sub(bytes as i64, Relaxed);
}

/// Heap bytes requested and not yet freed, process-wide.
pub fn live_bytes() -> i64 {
    LIVE_BYTES.load(Relaxed)
}

/// The system allocator, counting every allocation (and reallocation).
pub struct CountingAlloc;

#[allow(unsafe_code)] // implementing GlobalAlloc is unsafe by definition
                      // SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // A failed realloc leaves the old block as it was.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

/// Heap allocations per call of `op`, over `n` calls (after one warm-up call).
pub fn allocations_per_op(n: u64, mut op: impl FnMut()) -> f64 {
    op();
    let before = ALLOCATIONS.load(Relaxed);
    for _ in 0..n {
        op();
    }
    (ALLOCATIONS.load(Relaxed) - before) as f64 / n as f64
}

/// Prints one line of the allocation table criterion does not have.
pub fn report_allocations(name: &str, per_op: f64) {
    println!("allocations: {name}: {per_op:.1} per op");
}

/// CPU time (ns) of the live threads of process `pid` ("self" or a number) whose name passes `keep`.
pub fn tasks_cpu_ns(pid: &str, keep: impl Fn(&str) -> bool) -> u64 {
    let mut total = 0;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !keep(comm.trim()) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    total
}

/// CPU seconds (user + system) process `pid` has used, exited threads included.
pub fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name (the state is the
    // 1st; some fields between may be negative).
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    ticks as f64 / 100.0
}
