//! The meaning of a replica's bucket, over `Store`. So far: what a uuid's listing says,
//! kept fresh for a short time ([`fresh`]), so that reads of the latest version and of
//! tombstone state on a cloud replica do not cost a storage request each; and the
//! tombstone rule that decides what of it can be seen ([`visibility`]).

pub mod fresh;
pub mod visibility;

pub use fresh::FreshListings;
pub use visibility::Visibility;
