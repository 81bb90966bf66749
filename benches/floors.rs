//! The machine's physical floors, measured in the same `cargo xtask bench` run as the
//! appends they bound: one write + `fdatasync` into a preallocated file, one dependent read
//! from a table far larger than the caches, and the first write to memory the process has
//! never touched. Unlike the other benches this one keeps the system allocator, whose
//! large allocations are fresh pages from the kernel every time, so the last floor measures
//! what it says.

mod common;

use common::{PREALLOCATED_BYTES, preallocated_file};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The physical floor, measured in the same run: one `pwrite` + `fdatasync` into a
/// preallocated, zero-filled file (the log's file kind), for one ~250-byte event and for a
/// 64 KiB batch (256 events of 256 bytes: the largest group 256 appenders can form).
/// Throughput counts events, so `append/log/appenders=256` reads as a fraction of
/// `fsync/preallocated/bytes=65536`.
fn fsync_floor(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    let (dir, file) = preallocated_file("fsync");
    let mut group = c.benchmark_group("fsync/preallocated");
    for (bytes, events) in [(250u64, 1u64), (65_536, 256)] {
        group.throughput(Throughput::Elements(events));
        let data = vec![0xabu8; bytes as usize];
        let mut offset = 0u64;
        group.bench_function(format!("bytes={bytes}"), |b| {
            b.iter(|| {
                if offset + bytes > PREALLOCATED_BYTES {
                    offset = 0;
                }
                file.write_all_at(&data, offset).expect("write");
                file.sync_data().expect("fdatasync");
                offset += bytes;
            });
        });
    }
    group.finish();
    drop(file);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The other physical floor, for `append/memory/batch=1`: one random read from a table far
/// larger than the caches, each read depending on the last (a pointer chase through a
/// random cycle over 256 MiB). An append with a fresh random 128-bit event id must find
/// that id's slot in the store-wide id index, and once the store holds millions of events
/// that slot is such a read.
fn dram_floor(c: &mut Criterion) {
    const SLOTS: usize = 256 * 1024 * 1024 / 8;
    // Sattolo's shuffle: one cycle through every slot, drawn from a fixed seed.
    let mut next: Vec<usize> = (0..SLOTS).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..SLOTS).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        next.swap(i, (x % i as u64) as usize);
    }
    let mut group = c.benchmark_group("dram");
    group.throughput(Throughput::Elements(1));
    let mut at = 0usize;
    group.bench_function("random_read/table=256MiB", |b| {
        b.iter(|| {
            at = next[at];
            at
        });
    });
    group.finish();
}

/// The floor of `append/memory/batch=100`: writing memory the process has never touched.
/// An append-only store that grows needs fresh pages for every event it keeps, and each
/// fresh page costs a page fault and the kernel's zeroing before the first write lands.
/// One iteration allocates 64 MiB (above glibc's mmap threshold, so the pages are new each
/// time: this bench keeps the system allocator, which returns them to the kernel on free)
/// and writes every word; the unmapping is not timed.
fn fresh_memory_floor(c: &mut Criterion) {
    const BYTES: usize = 64 * 1024 * 1024;
    let mut group = c.benchmark_group("dram");
    group.throughput(Throughput::Bytes(BYTES as u64));
    group.sample_size(20);
    group.bench_function("first_write/bytes=64MiB", |b| {
        b.iter_with_large_drop(|| {
            let mut words: Vec<u64> = Vec::with_capacity(BYTES / 8);
            words.extend(0..(BYTES / 8) as u64);
            words
        });
    });
    group.finish();
}

criterion_group!(benches, fsync_floor, dram_floor, fresh_memory_floor);
criterion_main!(benches);
