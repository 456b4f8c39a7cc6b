//! dss: a replicated data store for large scientific data sets.
//!
//! One crate, two programs: the native backend `dss` (this crate's binary) and the
//! WebAssembly edge worker (`edge`, built with `worker-build`). Layering (see `ARCHITECTURE.md`):
//!
//! * [`model`]: pure types: ids, versions, checksums, manifests, Python-compatible JSON.
//! * [`storage`]: the [`storage::Store`] trait and its implementations.
//! * [`auth`]: JWT verification and claim policy.
//! * [`search`]: the index document (search engines come next).
//! * [`bucket`]: the meaning of a replica's bucket: keys, documents, tombstones, writes, ingest.
//! * [`api`]: the one router, written over `http::Request`/`http::Response`.
//! * `server`, `cli`, `jobs`: the native rims (not compiled for wasm32).
//! * `edge`: the Workers rim (wasm32 only).

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod bucket;
pub mod http;
pub mod model;
pub mod search;
pub mod storage;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
#[cfg(target_arch = "wasm32")]
pub mod edge;
#[cfg(not(target_arch = "wasm32"))]
pub mod jobs;
#[cfg(not(target_arch = "wasm32"))]
pub mod server;
