//! How much memory a value really holds: its heap allocations, each rounded up the way
//! the allocator rounds it. Caches weigh their entries with this, so a byte budget is a
//! budget of memory, not of entries.

use super::manifest::{BundleFile, BundleManifest, FileMetadata};

/// Bytes an allocation of `n` bytes occupies, as glibc's malloc and the dlmalloc of wasm32
/// hand it out: an 8-byte header, rounded to 16 bytes, never less than 32. (The native
/// binary's mimalloc rounds to size classes without a header: for the small strings of
/// documents this errs high by a few bytes, the safe side for a budget.)
pub fn alloc_size(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.saturating_add(8)
            .checked_next_multiple_of(16)
            .unwrap_or(usize::MAX)
            .max(32)
    }
}

/// Memory a value holds beyond its own inline size (`size_of::<Self>()`): what it
/// allocated, allocator rounding included.
pub trait HeapSize {
    /// Heap bytes held by `self`.
    fn heap_size(&self) -> usize;

    /// Inline size plus heap bytes: what the value costs where it is stored inline.
    fn total_size(&self) -> usize
    where
        Self: Sized,
    {
        std::mem::size_of::<Self>() + self.heap_size()
    }
}

impl HeapSize for String {
    fn heap_size(&self) -> usize {
        alloc_size(self.capacity())
    }
}

impl HeapSize for str {
    fn heap_size(&self) -> usize {
        0
    }
}

impl HeapSize for std::sync::Arc<str> {
    /// The shared allocation counts whole (two reference counts and the text).
    fn heap_size(&self) -> usize {
        alloc_size(2 * std::mem::size_of::<usize>() + self.len())
    }
}

impl<T: HeapSize> HeapSize for Option<T> {
    fn heap_size(&self) -> usize {
        self.as_ref().map_or(0, HeapSize::heap_size)
    }
}

impl<T: HeapSize> HeapSize for Vec<T> {
    fn heap_size(&self) -> usize {
        // Spare capacity is memory too.
        alloc_size(self.capacity() * std::mem::size_of::<T>()) + self.iter().map(HeapSize::heap_size).sum::<usize>()
    }
}

impl HeapSize for FileMetadata {
    fn heap_size(&self) -> usize {
        [
            &self.format,
            &self.version,
            &self.content_type,
            &self.crc32c,
            &self.s3_etag,
            &self.sha1,
            &self.sha256,
        ]
        .into_iter()
        .map(HeapSize::heap_size)
        .sum()
    }
}

impl HeapSize for BundleFile {
    fn heap_size(&self) -> usize {
        [
            &self.name,
            &self.uuid,
            &self.version,
            &self.content_type,
            &self.crc32c,
            &self.s3_etag,
            &self.sha1,
            &self.sha256,
        ]
        .into_iter()
        .map(HeapSize::heap_size)
        .sum()
    }
}

impl HeapSize for BundleManifest {
    fn heap_size(&self) -> usize {
        self.format.heap_size() + self.version.heap_size() + self.files.heap_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_round_as_malloc_does() {
        assert_eq!(alloc_size(0), 0);
        assert_eq!(alloc_size(1), 32);
        assert_eq!(alloc_size(24), 32);
        assert_eq!(alloc_size(25), 48);
        assert_eq!(alloc_size(64), 80);
    }

    #[test]
    fn strings_and_vectors_count_capacity() {
        let mut s = String::with_capacity(100);
        s.push('x');
        assert_eq!(s.heap_size(), alloc_size(100));
        let v: Vec<String> = vec!["a".repeat(40), String::new()];
        assert_eq!(
            v.heap_size(),
            alloc_size(2 * std::mem::size_of::<String>()) + alloc_size(40)
        );
        assert_eq!(Some("abc".to_string()).heap_size(), alloc_size(3));
    }
}
