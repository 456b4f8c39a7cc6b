//! Pure data model: identifiers, versions, checksums and the JSON documents
//! stored in a replica's bucket. Nothing here performs I/O.

pub mod checksum;
pub mod collection;
pub mod event;
pub mod heap;
pub mod ids;
pub mod manifest;
pub mod notification;
pub mod platform;
pub mod progress;
pub mod pyjson;
pub mod subscription;

pub use checksum::{ChecksumError, Checksums};
pub use ids::{DssVersion, IdError, ObjectUuid};
pub use platform::{BoxFuture, Clock, MaybeSend, MaybeSync, SystemClock};
pub use progress::{Progress, ProgressCounter};
