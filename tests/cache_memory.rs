//! The caches weigh entries by an estimate of their memory (`model::heap`). Checked here
//! against what the allocator really hands out for parsed documents: every allocation of
//! this thread is counted, rounded as `alloc_size` rounds it.

use dss::bucket::cache::entry_weight;
use dss::model::checksum::checksums_of;
use dss::model::heap::{alloc_size, HeapSize};
use dss::model::manifest::{BundleFile, BundleManifest, FileMetadata};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Live bytes allocated by this thread: requested, and as the allocator rounds them.
    static LIVE: Cell<(isize, isize)> = const { Cell::new((0, 0)) };
}

fn count(size: usize, sign: isize) {
    let _ = LIVE.try_with(|c| {
        let (req, real) = c.get();
        c.set((req + sign * size as isize, real + sign * alloc_size(size) as isize));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> (isize, isize) {
    LIVE.with(|c| c.get())
}

/// A manifest as stored, of `n` files with realistic names and content types.
fn manifest_text(n: usize) -> Vec<u8> {
    let meta = FileMetadata::new(
        0,
        "2019-05-15T161616.000000Z",
        "application/gzip; dcp-type=data",
        1_234_567_890,
        &checksums_of(b"x"),
    );
    let files = (0..n)
        .map(|i| {
            BundleFile::new(
                &format!("SRR{:07}_{}.fastq.gz", i / 2, i % 2 + 1),
                &uuid::Uuid::new_v4().to_string(),
                "2019-05-15T161616.000000Z",
                false,
                &meta,
            )
        })
        .collect();
    BundleManifest::new("2019-05-16T000000.000000Z", files, 1).to_bytes()
}

#[test]
fn the_weight_of_a_parsed_manifest_is_its_memory() {
    for n in [1, 100, 20_000] {
        let text = manifest_text(n);
        let before = live();
        let mut m: BundleManifest = serde_json::from_slice(&text).unwrap();
        m.files.shrink_to_fit();
        let boxed = std::sync::Arc::new(m);
        let after = live();
        let (requested, real) = (after.0 - before.0, after.1 - before.1);
        let weight = entry_weight(&format!("bundles/x.{n}"), &*boxed) as isize;
        // Everything allocated is counted (the weight adds the key and the cache's own
        // bookkeeping), and not much more.
        assert!(weight >= real, "{n} files: weight {weight} < real {real}");
        assert!(weight <= real + 512, "{n} files: weight {weight} vs real {real}");
        assert!(real >= requested);
        if n == 20_000 {
            // Per file: eight strings of a few dozen bytes each, about 600 bytes, about 1.6x the text.
            let per_file = real / n as isize;
            assert!((400..800).contains(&per_file), "{per_file} bytes per file");
            println!(
                "{n} files: text {} B, parsed {real} B ({per_file} B/file), weight {weight} B",
                text.len()
            );
        }
        drop(boxed);
    }
}

#[test]
fn the_weight_of_file_metadata_is_its_memory() {
    let text = FileMetadata::new(
        3,
        "2019-05-15T161616.000000Z",
        "application/json",
        42,
        &checksums_of(b"y"),
    )
    .to_bytes();
    let before = live();
    let m: FileMetadata = serde_json::from_slice(&text).unwrap();
    let real = live().1 - before.1;
    assert_eq!(m.heap_size() as isize, real);
}
