//! The meaning of a replica's bucket, over `Store`. So far: what a uuid's listing says,
//! kept fresh for a short time ([`fresh`]), so that reads of the latest version and of
//! tombstone state on a cloud replica do not cost a storage request each.

pub mod fresh;

pub use fresh::FreshListings;
