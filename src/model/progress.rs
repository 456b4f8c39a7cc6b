//! How far a job has come: items and bytes done of their totals. A job counts into a
//! [`ProgressCounter`] as it goes (cheap atomics, shared with the code doing the work);
//! the runner stores a [`Progress`] snapshot with the job when it renews its lease, so
//! reporting costs no extra write per item.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a job's progress. A total of 0 means "not known".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Items (files, objects) done.
    pub items_done: u64,
    /// Items in all.
    pub items_total: u64,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes in all.
    pub bytes_total: u64,
}

/// The live counters of one running job.
#[derive(Debug, Default)]
pub struct ProgressCounter {
    items_done: AtomicU64,
    items_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
}

impl ProgressCounter {
    /// Say how much there is to do.
    pub fn set_totals(&self, items: u64, bytes: u64) {
        self.items_total.store(items, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
    }

    /// Count `items` and `bytes` more done.
    pub fn add(&self, items: u64, bytes: u64) {
        self.items_done.fetch_add(items, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// What the counters say now.
    pub fn snapshot(&self) -> Progress {
        Progress {
            items_done: self.items_done.load(Ordering::Relaxed),
            items_total: self.items_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
        }
    }
}
